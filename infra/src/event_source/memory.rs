//! A stream in memory, for tests of the event source mapping over what moto never does: several
//! shards, splits, a shard that stops. Shards hold ready-made records; iterators are
//! `<shard>|<offset>`.

use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::types::Record;
use staleless_protocol::compare_sequence_numbers;

use super::reader::{Position, RecordPage, ShardInfo, StreamError, StreamReader};

/// One shard: its parent, its records in sequence order, and whether it is closed.
#[derive(Debug, Default)]
struct MemoryShard {
    parent: Option<String>,
    records: Vec<Record>,
    closed: bool,
}

/// Shards in memory, in the order they were added (as `DescribeStream` lists them).
#[derive(Debug, Default)]
pub struct MemoryStream {
    /// `(shard id, shard)`.
    shards: Mutex<Vec<(String, MemoryShard)>>,
}

fn seq_of(record: &Record) -> &str {
    record
        .dynamodb
        .as_ref()
        .and_then(|change| change.sequence_number.as_deref())
        .unwrap_or_default()
}

impl MemoryStream {
    fn shards(&self) -> std::sync::MutexGuard<'_, Vec<(String, MemoryShard)>> {
        self.shards.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds an open shard (a child of `parent` after a split) holding `records`.
    pub fn with_shard(&self, id: &str, parent: Option<&str>, records: impl IntoIterator<Item = Record>) {
        self.shards().push((
            id.to_owned(),
            MemoryShard {
                parent: parent.map(str::to_owned),
                records: records.into_iter().collect(),
                closed: false,
            },
        ));
    }

    /// Appends `records` to shard `id` (ignored if there is no such shard).
    pub fn append(&self, id: &str, records: impl IntoIterator<Item = Record>) {
        if let Some((_, shard)) = self.shards().iter_mut().find(|(shard_id, _)| shard_id == id) {
            shard.records.extend(records);
        }
    }

    /// Closes shard `id`: once read to its end, it has no next iterator.
    pub fn close(&self, id: &str) {
        if let Some((_, shard)) = self.shards().iter_mut().find(|(shard_id, _)| shard_id == id) {
            shard.closed = true;
        }
    }
}

#[async_trait]
impl StreamReader for MemoryStream {
    async fn shards(&self, _stream_arn: &str) -> Result<Vec<ShardInfo>, StreamError> {
        Ok(self
            .shards()
            .iter()
            .map(|(id, shard)| ShardInfo {
                shard_id: id.clone(),
                parent_shard_id: shard.parent.clone(),
            })
            .collect())
    }

    async fn iterator(&self, _stream_arn: &str, shard_id: &str, position: &Position) -> Result<String, StreamError> {
        let shards = self.shards();
        let (_, shard) = shards
            .iter()
            .find(|(id, _)| id == shard_id)
            .ok_or_else(|| StreamError::Other("no such shard".into()))?;
        let first_after = |seq: &str, inclusive: bool| {
            shard
                .records
                .iter()
                .position(|record| {
                    let order = compare_sequence_numbers(seq_of(record), seq);
                    order.is_gt() || (inclusive && order.is_eq())
                })
                .unwrap_or(shard.records.len())
        };
        let offset = match position {
            Position::TrimHorizon => 0,
            Position::Latest => shard.records.len(),
            Position::At(seq) => first_after(seq, true),
            Position::After(seq) => first_after(seq, false),
        };
        Ok(format!("{shard_id}|{offset}"))
    }

    async fn records(&self, iterator: &str, limit: i32) -> Result<RecordPage, StreamError> {
        let (shard_id, offset) = iterator.split_once('|').ok_or(StreamError::ExpiredIterator)?;
        let offset: usize = offset.parse().map_err(|_| StreamError::ExpiredIterator)?;
        let shards = self.shards();
        let (_, shard) = shards
            .iter()
            .find(|(id, _)| id == shard_id)
            .ok_or(StreamError::ExpiredIterator)?;
        let end = (offset + usize::try_from(limit).unwrap_or(1)).min(shard.records.len());
        let records = shard.records[offset.min(end)..end].to_vec();
        let next = (!shard.closed || end < shard.records.len()).then(|| format!("{shard_id}|{end}"));
        Ok(RecordPage {
            records,
            next_iterator: next,
        })
    }
}
