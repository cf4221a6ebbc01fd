//! `quizctl ca`: the cluster CA for local and test clusters. Creates `ca.pem` and `ca.key` in a
//! directory (once; later runs reuse them) and issues a certificate and key for each name: a
//! node's `node_id` or a router's `router_id`. Production CAs: see deploy/README.md.

use std::path::PathBuf;

use quiz_local::processes::{cert_files, ensure_certs};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Where the CA and the certificates live.
    #[arg(long, default_value = ".local/certs")]
    dir: PathBuf,
    /// The cluster's name (it names the CA).
    #[arg(long, default_value = "local")]
    cluster: String,
    /// Names to issue certificates for (existing ones are kept), such as `node-4`.
    names: Vec<String>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    for name in &names {
        anyhow::ensure!(
            !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
            "{name:?} is not a node or router name (1-64 letters, digits, '-', '_', '.')"
        );
    }
    ensure_certs(&args.dir, &args.cluster, &names)?;
    println!("CA: {}", args.dir.join("ca.pem").display());
    for name in names {
        let (cert, key) = cert_files(&args.dir, name);
        println!("{name}: {} {}", cert.display(), key.display());
    }
    Ok(())
}
