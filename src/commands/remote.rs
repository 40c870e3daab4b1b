//! `s3://bucket/prefix` arguments of `segments` and `query`: listing by date prefix and ranged
//! reads of the objects (see [`crate::s3`]).
//!
//! Segments are listed day by day (`<prefix>/<signal>/yyyy/mm/dd/`), so a `--since/--until`
//! range skips whole days without listing them. A segment's day is its first event's, and a
//! segment can hold events up to its `max_age` later (or earlier ones that arrived late), so
//! days are kept with a margin of [`DAY_MARGIN_DAYS`] on both sides; the footer statistics
//! then prune exactly. Reads are ranged GETs: the footer, the page index and only the
//! column chunks the filter and output need, on the query's reader threads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::s3::{S3Options, S3Url};
use crate::segment::reader::{RangeRead, ReadError, Segment, SegmentRetriever, read_key_metadata_remote};

/// Days listed beyond each end of a `--since/--until` range (see the module docs).
pub const DAY_MARGIN_DAYS: i64 = 1;

/// Reader threads for remote segments: S3 reads wait on the network, not the CPU.
pub const REMOTE_THREADS: usize = 8;

/// One S3 location and the runtime its client runs on.
pub struct S3Store {
    rt: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
    pub url: S3Url,
}

/// A segment object: its store, key and size.
#[derive(Clone)]
pub struct Object {
    store: Arc<S3Store>,
    key: String,
    pub size: u64,
}

impl RangeRead for Object {
    fn read_range(&self, start: u64, len: usize) -> std::io::Result<Bytes> {
        let s = &self.store;
        s.rt.block_on(crate::s3::get_range(&s.client, &s.url.bucket, &self.key, start, len as u64))
            .map_err(std::io::Error::other)
    }
}

impl S3Store {
    pub fn open(url: &str) -> anyhow::Result<Arc<S3Store>> {
        let url = S3Url::parse(url).map_err(|e| crate::exit_codes::config_error(anyhow::anyhow!("{e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sealtrail-s3")
            .enable_all()
            .build()?;
        let client = rt.block_on(crate::s3::client(S3Options::default()));
        Ok(Arc::new(S3Store { rt, client, url }))
    }

    /// The segment objects under the prefix, by day within `since ..= until` (nanoseconds,
    /// with the margin), as `s3://bucket/key` paths with their objects, sorted.
    pub fn list(
        self: &Arc<Self>,
        signals: &[&str],
        since: Option<i64>,
        until: Option<i64>,
    ) -> anyhow::Result<Vec<(PathBuf, Object)>> {
        let day = |nanos: i64, shift: i64| {
            chrono::DateTime::from_timestamp_nanos(nanos)
                .checked_add_signed(chrono::TimeDelta::days(shift))
                .map(|t| t.format("%Y/%m/%d").to_string())
        };
        let lo = since.and_then(|t| day(t, -DAY_MARGIN_DAYS));
        let hi = until.and_then(|t| day(t, DAY_MARGIN_DAYS));
        let (bucket, c) = (&self.url.bucket, &self.client);
        let mut out = Vec::new();
        for signal in signals {
            let base = format!("{}/", self.url.key(signal));
            let days = self.rt.block_on(async {
                let mut days = Vec::new();
                for y in crate::s3::list_dirs(c, bucket, &base).await? {
                    for m in crate::s3::list_dirs(c, bucket, &y).await? {
                        days.extend(crate::s3::list_dirs(c, bucket, &m).await?);
                    }
                }
                Ok::<_, crate::s3::S3Error>(days)
            })?;
            for d in days {
                // `<base>yyyy/mm/dd/`: compare the date part as text (fixed width).
                let date = d.strip_prefix(&base).unwrap_or(&d).trim_end_matches('/');
                if lo.as_deref().is_some_and(|lo| date < lo) || hi.as_deref().is_some_and(|hi| date > hi) {
                    continue;
                }
                for o in self.rt.block_on(crate::s3::list(c, bucket, &d))? {
                    if o.key.ends_with(".parquet") {
                        let path = PathBuf::from(format!("s3://{bucket}/{}", o.key));
                        out.push((path, Object { store: self.clone(), key: o.key, size: o.size }));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// Remote segments by their `s3://` path, next to local ones.
#[derive(Default, Clone)]
pub struct Remote {
    objects: HashMap<PathBuf, Object>,
}

impl Remote {
    pub fn add(&mut self, path: PathBuf, o: Object) {
        self.objects.insert(path, o);
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The size of a segment, local or remote.
    pub fn size(&self, f: &Path) -> u64 {
        match self.objects.get(f) {
            Some(o) => o.size,
            None => std::fs::metadata(f).map(|m| m.len()).unwrap_or(0),
        }
    }

    pub fn key_metadata(&self, f: &Path) -> Result<crate::keys::KeyMetadata, ReadError> {
        match self.objects.get(f) {
            Some(o) => read_key_metadata_remote(f, o, o.size),
            None => crate::segment::reader::read_key_metadata(f),
        }
    }

    pub fn open(&self, f: &Path, retriever: Arc<SegmentRetriever>) -> Result<Segment, ReadError> {
        match self.objects.get(f) {
            Some(o) => Segment::open_remote(f, Arc::new(o.clone()), o.size, retriever),
            None => Segment::open(f, retriever),
        }
    }
}

/// Expands `s3://` arguments into their segments (registered in `remote`), local ones with
/// [`crate::segment::find_segments`].
pub fn find_all(
    paths: &[PathBuf],
    signals: &[&str],
    since: Option<i64>,
    until: Option<i64>,
    remote: &mut Remote,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        match p.to_str().filter(|s| S3Url::is_s3(s)) {
            Some(url) => {
                let store = S3Store::open(url)?;
                for (path, o) in store.list(signals, since, until)? {
                    files.push(path.clone());
                    remote.add(path, o);
                }
            }
            None => files.extend(
                crate::segment::find_segments(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
            ),
        }
    }
    Ok(files)
}
