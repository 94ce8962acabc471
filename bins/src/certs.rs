//! `dotkv cert`: a cluster CA and node certificates for `security.tls`, written as PEM
//! files (private keys readable by their owner only).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use dotkv_rpc::security::{Pem, issue_node_cert, new_ca};

/// Makes `dir/ca.pem` and `dir/ca.key` unless `dir/ca.pem` exists (then signs with it),
/// and `dir/NODE.pem` and `dir/NODE.key` for each of `nodes`; returns the files written.
///
/// # Errors
///
/// A node name that is not a valid node id, an unreadable CA, or a file that cannot be
/// written. Nothing is overwritten but node files named again.
pub fn make(dir: &Path, nodes: &[String], hosts: &[String]) -> anyhow::Result<Vec<String>> {
    for node in nodes {
        crate::config::validate_node_id(node)
            .map_err(|reason| anyhow::anyhow!("node name {node:?}: {reason}"))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let mut written = Vec::new();
    let ca = if ca_cert.exists() {
        if !ca_key.exists() {
            bail!(
                "{} exists without {}: cannot sign node certificates",
                ca_cert.display(),
                ca_key.display()
            );
        }
        Pem {
            cert: read(&ca_cert)?,
            key: read(&ca_key)?,
        }
    } else {
        let ca = new_ca().map_err(anyhow::Error::msg)?;
        write(&ca_cert, &ca.cert, false)?;
        write(&ca_key, &ca.key, true)?;
        written.extend([display(&ca_cert), display(&ca_key)]);
        ca
    };
    for node in nodes {
        let pem = issue_node_cert(&ca, node, hosts).map_err(anyhow::Error::msg)?;
        let (cert, key) = (
            dir.join(format!("{node}.pem")),
            dir.join(format!("{node}.key")),
        );
        write(&cert, &pem.cert, false)?;
        write(&key, &pem.key, true)?;
        written.extend([display(&cert), display(&key)]);
    }
    Ok(written)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Writes `text` to `path`; a private key is created with mode 0600.
fn write(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    options
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}
