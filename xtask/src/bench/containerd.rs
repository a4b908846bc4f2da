//! A private containerd for the benchmarks that need one: the eStargz conversion of `bench
//! index`, and `bench run`'s peer, `ctr-remote image optimize` (stargz-snapshotter's fanotify
//! analyzer, which runs the workload and converts the image to eStargz) on the image already
//! imported and unpacked, as a user of it would have it.
//!
//! The daemon keeps everything (root, state, sockets) in the directory it is given (unix socket
//! paths are limited to 108 bytes: keep it short), serves one namespace, and is stopped when
//! dropped; the directory is the caller's to remove.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::cmd::output;

/// How long containerd may take to answer on its socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A containerd of our own.
pub struct Containerd {
    dir: PathBuf,
    namespace: &'static str,
    child: Child,
}

impl Containerd {
    /// Starts one in `dir` (created) serving `namespace`, and waits until it answers.
    pub fn start(dir: &Path, namespace: &'static str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = xtask::containerd_config(dir, xtask::NO_CRI);
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
        let mut daemon = Containerd {
            dir: dir.to_owned(),
            namespace,
            child,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = daemon.child.try_wait()? {
                bail!("containerd exited ({status}) at start:\n{}", daemon.log());
            }
            if UnixStream::connect(daemon.socket()).is_ok() {
                return Ok(daemon);
            }
            ensure!(
                Instant::now() < deadline,
                "containerd did not answer within {START_TIMEOUT:?}:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// `PROGRAM -a SOCKET -n NAMESPACE ARGS...` (ctr, ctr-remote); its stdout.
    pub fn client(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        output(
            Command::new(program)
                .arg("-a")
                .arg(self.socket())
                .args(["-n", self.namespace])
                .args(args)
                .stdin(Stdio::null()),
        )
    }

    /// Imports an OCI layout (tarred into an OCI archive), which also unpacks it for the
    /// overlayfs snapshotter; returns the name containerd gave it (it must be its only image).
    pub fn import(&self, layout: &Path) -> anyhow::Result<String> {
        let archive = self.dir.join("import.tar");
        let mut tar = tar::Builder::new(
            std::fs::File::create(&archive).context("creating the import archive")?,
        );
        tar.append_dir_all(".", layout)
            .with_context(|| format!("archiving {}", layout.display()))?;
        tar.into_inner().context("writing the import archive")?;
        self.client("ctr", &["images", "import", path_str(&archive)?])?;
        std::fs::remove_file(&archive).context("removing the import archive")?;
        let listed = self.client("ctr", &["images", "ls", "-q"])?;
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
        let (entrypoint, args) = (
            serde_json::to_string(entrypoint)?,
            serde_json::to_string(args)?,
        );
        let start = Instant::now();
        self.client(
            "ctr-remote",
            &[
                "image",
                "optimize",
                "--oci",
                "--period",
                "30",
                "--entrypoint",
                &entrypoint,
                "--args",
                &args,
                "--record-out",
                path_str(record)?,
                image,
                &target,
            ],
        )
        .context("`cargo xtask setup` installs ctr-remote (stargz-snapshotter)")?;
        let took = start.elapsed();
        self.remove(&target)?;
        Ok(took)
    }

    /// Removes an image.
    pub fn remove(&self, image: &str) -> anyhow::Result<()> {
        self.client("ctr", &["images", "rm", "--sync", image])?;
        Ok(())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Our own child, by its pid; the containers optimize made are gone when it returns,
        // and their shims with them.
        // SAFETY: kill(2) on a pid we spawned and have not reaped; no memory involved.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
