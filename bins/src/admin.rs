//! `dotkv join | leave | remove --wait`: following a membership change until the
//! claimant's transition completes, with a progress bar of the partition replicas moved.

use std::time::{Duration, Instant};

use anyhow::bail;
use dotkv_rpc::{Client, Connector, StatusReply};
use indicatif::{ProgressBar, ProgressStyle};

/// What a membership change waits for.
#[derive(Debug, Clone)]
pub enum Change {
    /// The asked node is `up`, in a ring with no transition pending.
    Join,
    /// The asked node left: it says `left`, or it has exited after it was leaving.
    Leave,
    /// Member `id` is `left` and owns nothing, with no transition pending.
    Remove(String),
}

/// How often the node is asked.
const POLL: Duration = Duration::from_millis(250);
/// How long the node may stay unreachable while a join or remove is followed.
const UNREACHABLE_FOR: Duration = Duration::from_secs(30);

/// Polls the node at `addr` until `change` is complete; shows a progress bar unless
/// `quiet`.
///
/// # Errors
///
/// When the node stays unreachable (except after a leave, where exiting is the goal).
pub async fn wait(
    addr: &str,
    timeout: Duration,
    connector: &Connector,
    change: Change,
    quiet: bool,
) -> anyhow::Result<()> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} partition replicas moved")
            .expect("a valid template"),
    );
    bar.set_message("waiting for the claimant");
    let mut unreachable_since: Option<Instant> = None;
    let mut was_leaving = false;
    loop {
        let status = match Client::connect_with(addr, timeout, connector).await {
            Ok(client) => client.status().await,
            Err(error) => Err(error),
        };
        let status = match status {
            Ok(status) => {
                unreachable_since = None;
                status
            }
            Err(error) => {
                if matches!(change, Change::Leave) && was_leaving {
                    // A leaving node exits once its data lives elsewhere.
                    bar.finish_with_message("left");
                    return Ok(());
                }
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE_FOR {
                    bar.abandon();
                    bail!("{addr} stayed unreachable for 30 s: {error}");
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        let own = own_status(&status);
        was_leaving |= matches!(own, Some("leaving" | "left"));
        if let Some(pending) = status.ring.as_ref().and_then(|r| r.pending.as_ref()) {
            bar.set_length(pending.moves as u64);
            bar.set_position(pending.moved as u64);
            bar.set_message(format!(
                "ring {} -> {}",
                status.ring.as_ref().map_or(0, |r| r.version),
                pending.version
            ));
        }
        if done(&status, own, &change) {
            bar.finish_with_message("done");
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The status of the answering node in its own reply.
fn own_status(status: &StatusReply) -> Option<&str> {
    status
        .nodes
        .iter()
        .find(|n| n.id == status.node)
        .map(|n| n.status.as_str())
}

fn done(status: &StatusReply, own: Option<&str>, change: &Change) -> bool {
    let settled = status.ring.as_ref().is_some_and(|r| r.pending.is_none());
    match change {
        Change::Join => settled && own == Some("up"),
        Change::Leave => own == Some("left"),
        Change::Remove(id) => {
            settled
                && status
                    .nodes
                    .iter()
                    .find(|n| n.id == *id)
                    .is_some_and(|n| n.status == "left" && n.partitions == 0)
        }
    }
}
