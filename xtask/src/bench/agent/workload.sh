#!/bin/sh
# The agent benchmark workload (/app/run.sh of the benchmark image): $1 rounds of opening ten
# data files through shell redirections (`: <FILE` is one openat and a close: no read, no
# exec), bracketed by wall-clock stamps. The exit stamp is the workload's very last act:
# `exec date` replaces the shell, so the process that prints it is the one whose exit ends the
# run.
set -eu
rounds=${1:-0}
echo "workload-start-ns=$(date +%s%N)"
cd /app/data
i=0
while [ "$i" -lt "$rounds" ]; do
    : <config.txt
    : <words.txt
    : <numbers.txt
    : <notes/a.txt
    : <notes/b.txt
    : <cache/fresh.txt
    : </app/data/config.txt
    : </app/data/words.txt
    : </app/data/latest
    : </etc/passwd
    i=$((i + 1))
done
exec date +workload-exit-ns=%s%N
