//! Node leases in SQL: the cluster's members, one row per shard node.
//!
//! The store only keeps the rows. What a lease means (a node is a member while its lease has
//! not expired; draining nodes leave the ring) is the router's to decide, so expired leases are
//! listed like any other until the node renews or releases its own.

use async_trait::async_trait;
use quiz_protocol::NodeId;
use sqlx::any::AnyRow;

use super::{SqlStore, db, flag, int, text};
use crate::{MembershipStore, NodeLease, StoreError};

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
