//! The load processes of one run, as the bench sees them: child processes of this executable
//! (`quiz-bench phones`), each given a [`Plan`] on stdin and heard on stdout.
//!
//! Each holds at most [`MAX_PHONES_PER_PROCESS`] sockets (a process here may open 20,000
//! files) from a source address of its own, 127.0.0.2 upwards, so that the sockets of one
//! process never run out of ephemeral ports towards one edge and per-address limits see
//! several addresses. Every child is killed when the fleet is dropped, also on failure.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command as Process};
use tokio::sync::mpsc;

use super::wire::{Command, Measured, Plan, Report};

/// Sockets one load process holds at most (its open-file limit is 20,000).
pub const MAX_PHONES_PER_PROCESS: u64 = 12_500;

/// A running load process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    reports: mpsc::Receiver<Report>,
    joined: u64,
    failed: u64,
    done: Option<Box<Measured>>,
}

/// The load processes of a run.
pub struct Fleet {
    workers: Vec<Worker>,
}

/// How far the phones have got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub joined: u64,
    pub failed: u64,
}

impl Fleet {
    /// Starts one load process per plan (`exe phones`) and waits until each is ready.
    pub async fn spawn(exe: &Path, plans: Vec<Plan>) -> anyhow::Result<Fleet> {
        let mut fleet = Fleet {
            workers: Vec::new(),
        };
        for plan in &plans {
            let mut child = Process::new(exe)
                .arg("phones")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting load process {}", plan.worker))?;
            let mut stdin = child.stdin.take().context("no stdin")?;
            let stdout = child.stdout.take().context("no stdout")?;
            let (tx, reports) = mpsc::channel(256);
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Report>(&line) {
                        Ok(r) => {
                            if tx.send(r).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "a load process said something odd"),
                    }
                }
            });
            let mut line = serde_json::to_vec(plan)?;
            line.push(b'\n');
            stdin.write_all(&line).await?;
            fleet.workers.push(Worker {
                child,
                stdin,
                reports,
                joined: 0,
                failed: 0,
                done: None,
            });
        }
        for (i, w) in fleet.workers.iter_mut().enumerate() {
            let ready = tokio::time::timeout(Duration::from_secs(300), async {
                loop {
                    match w.reports.recv().await {
                        Some(Report::Ready { .. }) => return Ok(()),
                        Some(Report::Failed { error }) => bail!("load process {i}: {error}"),
                        Some(_) => {}
                        None => bail!("load process {i} exited before it was ready"),
                    }
                }
            })
            .await;
            ready.with_context(|| format!("load process {i} never got ready"))??;
        }
        Ok(fleet)
    }

    /// Sends `command` to every load process.
    pub async fn command(&mut self, command: &Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(command)?;
        line.push(b'\n');
        for w in &mut self.workers {
            w.stdin.write_all(&line).await?;
            w.stdin.flush().await?;
        }
        Ok(())
    }

    /// Takes in every report waiting, without blocking; the phones' progress.
    pub fn poll(&mut self) -> anyhow::Result<Progress> {
        for (i, w) in self.workers.iter_mut().enumerate() {
            while let Ok(report) = w.reports.try_recv() {
                match report {
                    Report::Progress { joined, failed } => (w.joined, w.failed) = (joined, failed),
                    Report::Done(m) => w.done = Some(m),
                    Report::Failed { error } => bail!("load process {i}: {error}"),
                    Report::Ready { .. } => {}
                }
            }
        }
        Ok(Progress {
            joined: self.workers.iter().map(|w| w.joined).sum(),
            failed: self.workers.iter().map(|w| w.failed).sum(),
        })
    }

    /// Waits (at most `limit`) until `total` phones have joined or failed for good, calling
    /// `tick` with the progress every 100 ms.
    pub async fn wait_settled(
        &mut self,
        total: u64,
        limit: Duration,
        mut tick: impl FnMut(Progress),
    ) -> anyhow::Result<Progress> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let p = self.poll()?;
            tick(p);
            if p.joined + p.failed >= total {
                return Ok(p);
            }
            if tokio::time::Instant::now() > deadline {
                return Ok(p);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Tells every load process to stop and collects what each measured.
    pub async fn stop(mut self) -> anyhow::Result<Vec<Measured>> {
        self.command(&Command::Stop).await?;
        let mut out = Vec::new();
        for (i, w) in self.workers.iter_mut().enumerate() {
            if w.done.is_none() {
                let got = tokio::time::timeout(Duration::from_secs(120), async {
                    loop {
                        match w.reports.recv().await {
                            Some(Report::Done(m)) => return Ok(m),
                            Some(Report::Failed { error }) => bail!("load process {i}: {error}"),
                            Some(_) => {}
                            None => bail!("load process {i} exited without its results"),
                        }
                    }
                })
                .await
                .with_context(|| format!("load process {i} did not report in time"))??;
                w.done = Some(got);
            }
            if tokio::time::timeout(Duration::from_secs(30), w.child.wait())
                .await
                .is_err()
            {
                let _ = w.child.kill().await;
            }
            if let Some(m) = w.done.take() {
                out.push(*m);
            }
        }
        Ok(out)
    }
}

/// Splits `count` phones over as few load processes as the per-process cap allows (at least
/// `min_processes`), each with its own source address.
pub fn split(count: u64, min_processes: usize) -> Vec<(u64, u64, std::net::IpAddr)> {
    let needed = count.div_ceil(MAX_PHONES_PER_PROCESS) as usize;
    let processes = needed.max(min_processes).max(1);
    let per = count.div_ceil(processes as u64);
    (0..processes)
        .map(|k| {
            let first = per * k as u64;
            let n = per.min(count.saturating_sub(first));
            (first, n, source_address(k))
        })
        .filter(|(_, n, _)| *n > 0)
        .collect()
}

/// The source address of load process `k`: 127.0.0.2, 127.0.0.3, …
pub fn source_address(k: usize) -> std::net::IpAddr {
    let k = k as u32 + 2;
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, (k >> 8) as u8, k as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_split_under_the_cap_each_from_its_own_address() {
        let parts = split(50_000, 1);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts.iter().map(|p| p.1).sum::<u64>(), 50_000);
        assert!(parts.iter().all(|p| p.1 <= MAX_PHONES_PER_PROCESS));
        assert_eq!(parts[0].2.to_string(), "127.0.0.2");
        assert_eq!(parts[3].2.to_string(), "127.0.0.5");
        let small = split(10, 3);
        assert_eq!(small.iter().map(|p| p.1).sum::<u64>(), 10);
        assert_eq!(small.len(), 3);
        assert_eq!(source_address(300).to_string(), "127.0.1.46");
    }
}
