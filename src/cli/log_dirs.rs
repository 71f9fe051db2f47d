//! What the brokers' log dirs say of each partition (DescribeLogDirs):
//! its bytes on local disk and in the tier, for `strata tier status` and
//! `strata tier cost`.

use std::collections::BTreeMap;

use crate::client::Client;

/// A partition's bytes on local disk (summed over its replicas) and in
/// the tier, and how far its uploads lag.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sizes {
    pub local_bytes: i64,
    pub tier_bytes: i64,
    pub upload_lag: i64,
}

/// The sizes of every partition the brokers of `md` hold, from their log
/// dirs (DescribeLogDirs): the first is local disk, the second the tier.
pub async fn log_dir_sizes(
    client: &Client,
    md: &crate::client::ClusterMetadata,
) -> anyhow::Result<BTreeMap<(String, i32), Sizes>> {
    let mut sizes: BTreeMap<(String, i32), Sizes> = BTreeMap::new();
    for b in &md.brokers {
        for (i, (_dir, parts)) in client
            .describe_log_dirs(b.node_id)
            .await?
            .into_iter()
            .enumerate()
        {
            for (t, p, size, lag) in parts {
                let s = sizes.entry((t, p)).or_default();
                if i == 0 {
                    s.local_bytes += size;
                } else {
                    s.tier_bytes = size;
                    s.upload_lag = lag;
                }
            }
        }
    }
    Ok(sizes)
}
