//! Node leases and the published ring in SQL: the cluster's members, one row per shard node,
//! and the one ring the routers agreed on (table `cluster_ring`, at most one row).
//!
//! The store only keeps the rows. What a lease means (a node is a member while its lease has
//! not expired; draining nodes leave the ring) is the router's to decide, so expired leases are
//! listed like any other until the node renews or releases its own.
//!
//! Publishing a ring is a compare-and-set on its epoch, in one statement so that it is atomic
//! on both dialects: the first ring inserts the row (`ON CONFLICT DO NOTHING`: of two first
//! rings one inserts, the other touches nothing), a later one updates the row only where it
//! still holds the previous epoch (PostgreSQL re-checks that condition after waiting for a
//! concurrent update's row lock, so the loser sees the winner's epoch and updates nothing).

use async_trait::async_trait;
use quiz_protocol::NodeId;
use sqlx::any::AnyRow;

use super::{SqlStore, corrupt, db, flag, int, json, text, to_json};
use crate::{MembershipStore, NodeLease, RingRecord, StoreError};

#[async_trait]
impl MembershipStore for SqlStore {
    async fn renew_lease(&self, lease: &NodeLease) -> Result<(), StoreError> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO node_leases (node, ws_url, cluster_addr, weight, draining, renewed_at, \
                 expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (node) DO UPDATE SET ws_url = excluded.ws_url, \
                 cluster_addr = excluded.cluster_addr, weight = excluded.weight, \
                 draining = excluded.draining, renewed_at = excluded.renewed_at, \
                 expires_at = excluded.expires_at",
        )
        .bind(lease.node.0.as_str())
        .bind(lease.ws_url.as_str())
        .bind(lease.cluster_addr.as_str())
        .bind(i64::from(lease.weight))
        .bind(lease.draining)
        .bind(lease.renewed_at)
        .bind(lease.expires_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn leases(&self) -> Result<Vec<NodeLease>, StoreError> {
        let rows = sqlx::query(
            "SELECT node, ws_url, cluster_addr, weight, draining, renewed_at, expires_at \
             FROM node_leases ORDER BY node",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(decode_lease).collect()
    }

    async fn release_lease(&self, node: &NodeId) -> Result<(), StoreError> {
        let _writer = self.writer().await;
        sqlx::query("DELETE FROM node_leases WHERE node = $1")
            .bind(node.0.as_str())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn ring(&self) -> Result<Option<RingRecord>, StoreError> {
        let row = sqlx::query("SELECT epoch, members, updated_at FROM cluster_ring WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(decode_ring).transpose()
    }

    async fn publish_ring(&self, ring: &RingRecord) -> Result<bool, StoreError> {
        let epoch = ring_epoch_i64(ring.epoch)?;
        let members = to_json(&ring.members)?;
        let _writer = self.writer().await;
        let done = match ring.epoch {
            // Epochs start at 1: a ring at 0 can never be the next one.
            0 => return Ok(false),
            1 => {
                sqlx::query(
                    "INSERT INTO cluster_ring (id, epoch, members, updated_at) \
                 VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING",
                )
                .bind(epoch)
                .bind(members)
                .bind(ring.updated_at)
                .execute(&self.pool)
                .await
            }
            _ => {
                sqlx::query(
                    "UPDATE cluster_ring SET epoch = $1, members = $2, updated_at = $3 \
                 WHERE id = 1 AND epoch = $4",
                )
                .bind(epoch)
                .bind(members)
                .bind(ring.updated_at)
                .bind(epoch - 1)
                .execute(&self.pool)
                .await
            }
        }
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}

fn ring_epoch_i64(epoch: u64) -> Result<i64, StoreError> {
    i64::try_from(epoch).map_err(|_| corrupt("ring epoch", format_args!("{epoch} is too large")))
}

fn decode_ring(row: &AnyRow) -> Result<RingRecord, StoreError> {
    Ok(RingRecord {
        epoch: int(row, "epoch")?,
        members: json(row, "members")?,
        updated_at: int(row, "updated_at")?,
    })
}

fn decode_lease(row: &AnyRow) -> Result<NodeLease, StoreError> {
    Ok(NodeLease {
        node: NodeId(text(row, "node")?),
        ws_url: text(row, "ws_url")?,
        cluster_addr: text(row, "cluster_addr")?,
        weight: int(row, "weight")?,
        draining: flag(row, "draining")?,
        renewed_at: int(row, "renewed_at")?,
        expires_at: int(row, "expires_at")?,
    })
}
