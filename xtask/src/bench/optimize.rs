//! The peer of `cargo xtask bench run`: `ctr-remote image optimize` (stargz-snapshotter's
//! fanotify analyzer, which runs the workload and converts the image to eStargz) on the same
//! image, already imported and unpacked in a private containerd, as a user of it would have it.
//!
//! The daemon keeps everything (root, state, sockets) in a temp dir of its own under /tmp
//! (unix socket paths are limited to 108 bytes), serves one namespace, and is stopped with
//! everything it started when this is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::cmd::output;

const NAMESPACE: &str = "bench";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A containerd of our own.
pub struct Containerd {
    dir: PathBuf,
    child: Child,
}

impl Containerd {
    /// Starts one and waits until it answers.
    pub fn start() -> anyhow::Result<Self> {
        let dir = PathBuf::from(format!("/tmp/recorder-bench-ctrd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let d = dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
        );
        std::fs::write(dir.join("config.toml"), config).context("writing containerd's config")?;
        let log = std::fs::File::create(dir.join("containerd.log"))
            .context("creating containerd's log")?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("containerd's log")?)
            .stderr(log)
            .spawn()
            .context("starting containerd (`cargo xtask setup` installs it)")?;
        let mut daemon = Containerd { dir, child };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = daemon.child.try_wait()? {
                bail!("containerd exited ({status}) at start:\n{}", daemon.log());
            }
            if daemon.ctr(&["version"]).output()?.status.success() {
                return Ok(daemon);
            }
            ensure!(
                Instant::now() < deadline,
                "containerd did not answer within {START_TIMEOUT:?}:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn with_address(&self, tool: &str, args: &[&str]) -> Command {
        let mut command = Command::new(tool);
        command
            .arg("-a")
            .arg(self.dir.join("c.sock"))
            .args(["-n", NAMESPACE])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn ctr(&self, args: &[&str]) -> Command {
        self.with_address("ctr", args)
    }

    /// Imports an OCI layout (tarred into an OCI archive), which also unpacks it for the
    /// overlayfs snapshotter; returns the name containerd gave it.
    pub fn import(&self, layout: &Path) -> anyhow::Result<String> {
        let archive = self.dir.join("import.tar");
        let mut tar = tar::Builder::new(
            std::fs::File::create(&archive).context("creating the import archive")?,
        );
        tar.append_dir_all(".", layout)
            .with_context(|| format!("archiving {}", layout.display()))?;
        tar.into_inner().context("writing the import archive")?;
        output(self.ctr(&["images", "import"]).arg(&archive))?;
        std::fs::remove_file(&archive).context("removing the import archive")?;
        let listed = output(&mut self.ctr(&["images", "ls", "-q"]))?;
        let names: Vec<&str> = listed.lines().collect();
        match names.as_slice() {
            [name] => Ok((*name).to_owned()),
            _ => bail!("expected one image in the bench's containerd, found {names:?}"),
        }
    }

    /// One `ctr-remote image optimize --oci` of `image` with `entrypoint` and `args` as its
    /// workload (its record written to `record`), start to exit; its output image removed.
    pub fn optimize(
        &self,
        image: &str,
        entrypoint: &[&str],
        args: &[&str],
        record: &Path,
    ) -> anyhow::Result<Duration> {
        let target = format!("{image}-optimized");
        let json = |v: &[&str]| serde_json::to_string(v).unwrap_or_default();
        let mut command = self.with_address(
            "ctr-remote",
            &[
                "image",
                "optimize",
                "--oci",
                "--period",
                "30",
                "--entrypoint",
                &json(entrypoint),
                "--args",
                &json(args),
            ],
        );
        command
            .arg("--record-out")
            .arg(record)
            .args([image, &target]);
        let start = Instant::now();
        output(&mut command)
            .context("`cargo xtask setup` installs ctr-remote (stargz-snapshotter)")?;
        let took = start.elapsed();
        output(&mut self.ctr(&["images", "rm", "--sync", &target]))?;
        Ok(took)
    }

    /// Removes an image imported before.
    pub fn remove(&self, image: &str) -> anyhow::Result<()> {
        output(&mut self.ctr(&["images", "rm", "--sync", image]))?;
        Ok(())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Every container optimize made is gone when it returns; its shims exit with them.
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshots are overlay dirs, not mounts, once no container uses them.
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("removing {}: {error}", self.dir.display());
        }
    }
}
