#!/bin/sh
# The demo workload (/app/run.sh in the demo image): reads files from every layer of the image,
# by absolute and relative paths and through symlinks, runs a few programs, and exits 0.
set -eu
echo "demo workload: ${DEMO_GREETING:-hello} from $0 $*, working dir $PWD"

# Absolute paths: config.txt comes from the update layer, which shadows the app layer's copy.
cat /app/data/config.txt
head -n 3 /app/data/words.txt

# Relative paths, after a cd.
cd /app/data
echo "numbers.txt has $(wc -l <numbers.txt) lines; the smallest are:"
sort -n numbers.txt | head -n 2
sha256sum notes/a.txt notes/b.txt

# cache/ is opaque in the update layer: only fresh.txt is left of it.
echo "cache/ holds: $(ls cache)"
cat cache/fresh.txt
# old.txt is deleted by a whiteout in the update layer.
if [ -e old.txt ]; then echo "old.txt is still there"; else echo "old.txt is gone (whiteout)"; fi

# Symlinks from the links layer: one to a file of the update layer, one to a program of the base.
cat latest >/dev/null
count -c /app/data/words.txt
ls -l /app/data
exit 0
