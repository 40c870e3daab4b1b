//! Amazon S3 (and S3-compatible endpoints): the client the sealed sink uploads segments with
//! and `segments` / `query` read them back with.
//!
//! One SDK (`aws-sdk-s3`, lean features) on the stack the KMS provider already links: the
//! smithy runtime, its hyper 1 client on rustls with ring, and the `aws-config` credential
//! chain (environment, shared files and profiles, web identity, ECS/EKS container
//! credentials, IMDSv2). The endpoint comes from the SDK's own settings (`AWS_ENDPOINT_URL_S3`,
//! `AWS_ENDPOINT_URL`); with an endpoint override the client uses path-style addressing
//! (`http://host/bucket/key`), which S3-compatible servers and emulators need and AWS accepts.
//!
//! **Integrity.** Every upload carries a CRC32 checksum per request (S3 rejects a body that
//! does not match it); after the upload a `HeadObject` must show the local size and the
//! checksum computed here (the full-object CRC32, or for a multipart upload the
//! checksum-of-checksums `…-<parts>` S3 computes), or the upload counts as failed.
//!
//! Objects never carry customer data in their names: keys are the segment's relative path
//! (`<signal>/yyyy/mm/dd/<first-event-ms>-<16 hex>.parquet`) under the configured prefix.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Segments at least this large go up as a multipart upload (smaller ones in one PUT, read
/// into memory whole).
pub const MULTIPART_THRESHOLD: u64 = 16 << 20;
/// The size of one part of a multipart upload: the memory one upload holds at a time.
pub const PART_BYTES: usize = 8 << 20;
/// One S3 call, connection and the SDK's retries included, fails after this long.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);
/// One attempt of an S3 call fails after this long (then the SDK retries).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting to the S3 endpoint fails after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// An `s3://bucket/prefix` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl S3Url {
    /// Is `s` an `s3://` URL (rather than a local path)?
    pub fn is_s3(s: &str) -> bool {
        s.starts_with("s3://")
    }

    /// Parses `s3://bucket[/prefix]`, checking the bucket name against S3's rules.
    pub fn parse(s: &str) -> Result<S3Url, String> {
        let rest =
            s.strip_prefix("s3://").ok_or_else(|| format!("`{s}` is not an s3://bucket/prefix URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let ok_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.as_bytes()[0].is_ascii_alphanumeric()
            && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
        if !ok_bucket {
            return Err(format!(
                "`{s}`: `{bucket}` is not a valid S3 bucket name (3 to 63 lower-case letters, digits, `.` and `-`)"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p.is_empty() || p == "." || p == "..") && !prefix.is_empty() {
            return Err(format!("`{s}`: the prefix has an empty, `.` or `..` part"));
        }
        if prefix.len() > 512 || prefix.bytes().any(|b| b.is_ascii_control()) {
            return Err(format!("`{s}`: the prefix is longer than 512 bytes or has control characters"));
        }
        Ok(S3Url { bucket: bucket.to_owned(), prefix: prefix.to_owned() })
    }

    /// The object key of `rel` (a `/`-separated relative path) under the prefix.
    pub fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() { rel.to_owned() } else { format!("{}/{rel}", self.prefix) }
    }

    /// The part of an object key after the prefix.
    pub fn relative<'k>(&self, key: &'k str) -> Option<&'k str> {
        if self.prefix.is_empty() {
            Some(key)
        } else {
            key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
        }
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// A failed S3 call: what, where, why, and whether trying again may help.
#[derive(Debug, Clone)]
pub struct S3Error {
    pub op: &'static str,
    /// `s3://bucket/key`.
    pub target: String,
    pub reason: String,
    pub retryable: bool,
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3 {} {}: {}", self.op, self.target, self.reason)
    }
}

impl std::error::Error for S3Error {}

fn err(op: &'static str, target: &str, reason: impl Into<String>, retryable: bool) -> S3Error {
    S3Error { op, target: target.to_owned(), reason: reason.into(), retryable }
}

/// A clear error from an SDK failure: denied, missing bucket, unreachable, throttled.
fn sdk_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &'static str,
    target: &str,
    e: SdkError<E>,
) -> S3Error {
    let (reason, retryable) = match &e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("unknown");
            let msg = se.err().message().unwrap_or("");
            match code {
                "AccessDenied" => (
                    format!(
                        "access denied: the caller lacks s3:{} on this bucket or prefix (or kms:GenerateDataKey on its SSE-KMS key) ({msg})",
                        s3_action(op)
                    ),
                    true,
                ),
                "NoSuchBucket" => ("the bucket does not exist (or is in another account)".to_owned(), true),
                "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" => {
                    (format!("{code}: the AWS credentials are not valid for S3 ({msg})"), true)
                }
                "PermanentRedirect" | "AuthorizationHeaderMalformed" => {
                    (format!("{code}: the bucket is in another region ({msg})"), false)
                }
                "BadDigest" | "InvalidDigest" | "XAmzContentChecksumMismatch" | "InvalidRequest" => {
                    (format!("{code}: S3 rejected the body's checksum ({msg})"), true)
                }
                _ => (format!("{code}: {msg}"), true),
            }
        }
        SdkError::DispatchFailure(d) => (
            format!(
                "S3 is unreachable ({}); check the network, the region and the endpoint",
                d.as_connector_error().map(|c| c.to_string()).unwrap_or_default()
            ),
            true,
        ),
        SdkError::TimeoutError(_) => ("S3 did not answer in time".to_owned(), true),
        SdkError::ConstructionFailure(_) => {
            ("no usable AWS configuration (region or credentials missing?)".to_owned(), false)
        }
        SdkError::ResponseError(_) => ("S3 sent a response that could not be read".to_owned(), true),
        other => (format!("{}", aws_sdk_s3::error::DisplayErrorContext(other)), true),
    };
    err(op, target, reason, retryable)
}

/// The IAM action behind an operation, for access-denied messages.
fn s3_action(op: &str) -> &'static str {
    match op {
        "ListObjectsV2" => "ListBucket",
        "GetObject" | "HeadObject" => "GetObject",
        "AbortMultipartUpload" => "AbortMultipartUpload",
        _ => "PutObject",
    }
}

/// Options of the S3 client.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// An endpoint URL overriding the SDK's (which also reads `AWS_ENDPOINT_URL_S3` and
    /// `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
}

/// The SDK client on the agent's own HTTP stack (hyper 1, rustls with ring). Makes no call:
/// credentials and region are resolved at the first request.
pub async fn client(options: S3Options) -> Client {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(OPERATION_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts);
    if let Some(ep) = options.endpoint {
        loader = loader.endpoint_url(ep);
    }
    let shared = loader.load().await;
    let mut conf = aws_sdk_s3::config::Builder::from(&shared);
    if shared.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some() {
        conf = conf.force_path_style(true);
    }
    Client::from_conf(conf.build())
}

/// Server-side encryption of uploaded objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sse {
    /// The bucket's default.
    #[default]
    BucketDefault,
    /// SSE-KMS with this key (id, ARN or `alias/…`).
    Kms(String),
}

/// What an upload left in S3.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub key: String,
    pub bytes: u64,
    pub parts: usize,
    pub e_tag: String,
}

/// The CRC32 of `data` as S3 writes it (base64 of the big-endian value).
fn crc32_b64(data: &[u8]) -> (u32, String) {
    let c = crc32fast::hash(data);
    (c, B64.encode(c.to_be_bytes()))
}

/// Uploads the file at `path` to `bucket`/`key` (multipart from [`MULTIPART_THRESHOLD`]),
/// then checks with `HeadObject` that S3 holds exactly its bytes (size and CRC32).
pub async fn upload_file(
    client: &Client,
    bucket: &str,
    key: &str,
    path: &Path,
    sse: &Sse,
) -> Result<Uploaded, S3Error> {
    let target = format!("s3://{bucket}/{key}");
    let io = |e: std::io::Error| err("PutObject", &target, format!("reading {}: {e}", path.display()), true);
    let size = tokio::fs::metadata(path).await.map_err(io)?.len();
    let (e_tag, parts, want_crc) = if size < MULTIPART_THRESHOLD {
        let data = tokio::fs::read(path).await.map_err(io)?;
        if data.len() as u64 != size {
            return Err(err("PutObject", &target, "the file changed while it was read", true));
        }
        let (_, crc) = crc32_b64(&data);
        let mut req = client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_length(size as i64)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .checksum_crc32(crc.clone())
            .body(ByteStream::from(data));
        if let Sse::Kms(id) = sse {
            req =
                req.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms).ssekms_key_id(id);
        }
        let out = req.send().await.map_err(|e| sdk_error("PutObject", &target, e))?;
        (out.e_tag.unwrap_or_default(), 1, crc)
    } else {
        multipart(client, bucket, key, path, size, sse, &target).await?
    };
    verify(client, bucket, key, size, &want_crc, &target).await?;
    Ok(Uploaded { key: key.to_owned(), bytes: size, parts, e_tag })
}

async fn multipart(
    client: &Client,
    bucket: &str,
    key: &str,
    path: &Path,
    size: u64,
    sse: &Sse,
    target: &str,
) -> Result<(String, usize, String), S3Error> {
    let mut req =
        client.create_multipart_upload().bucket(bucket).key(key).checksum_algorithm(ChecksumAlgorithm::Crc32);
    if let Sse::Kms(id) = sse {
        req = req.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms).ssekms_key_id(id);
    }
    let created = req.send().await.map_err(|e| sdk_error("CreateMultipartUpload", target, e))?;
    let upload_id = created
        .upload_id
        .ok_or_else(|| err("CreateMultipartUpload", target, "no upload id in the answer", true))?;
    let r = upload_parts(client, bucket, key, path, size, &upload_id, target).await;
    match r {
        Ok(v) => Ok(v),
        Err(e) => {
            // Parts of an abandoned upload cost storage until aborted.
            let _ =
                client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&upload_id).send().await;
            Err(e)
        }
    }
}

async fn upload_parts(
    client: &Client,
    bucket: &str,
    key: &str,
    path: &Path,
    size: u64,
    upload_id: &str,
    target: &str,
) -> Result<(String, usize, String), S3Error> {
    use tokio::io::AsyncReadExt;
    let io = |e: std::io::Error| err("UploadPart", target, format!("reading {}: {e}", path.display()), true);
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let mut parts = Vec::new();
    let mut part_crcs = Vec::new();
    let mut sent = 0u64;
    let mut number = 1i32;
    while sent < size {
        let len = (size - sent).min(PART_BYTES as u64) as usize;
        let mut buf = vec![0u8; len];
        file.read_exact(&mut buf).await.map_err(io)?;
        let (crc, crc_b64) = crc32_b64(&buf);
        part_crcs.extend_from_slice(&crc.to_be_bytes());
        let out = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(len as i64)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .checksum_crc32(crc_b64.clone())
            .body(ByteStream::from(buf))
            .send()
            .await
            .map_err(|e| sdk_error("UploadPart", target, e))?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(out.e_tag.unwrap_or_default())
                .checksum_crc32(crc_b64)
                .build(),
        );
        sent += len as u64;
        number += 1;
    }
    let count = parts.len();
    let done = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .map_err(|e| sdk_error("CompleteMultipartUpload", target, e))?;
    // S3's checksum of a multipart object: the CRC32 of the parts' CRC32s, then `-<parts>`.
    let (_, composite) = crc32_b64(&part_crcs);
    Ok((done.e_tag.unwrap_or_default(), count, format!("{composite}-{count}")))
}

/// `HeadObject`: the object must have the local size, and its CRC32 (when S3 reports one)
/// must be the one computed from the local bytes.
async fn verify(
    client: &Client,
    bucket: &str,
    key: &str,
    size: u64,
    crc: &str,
    target: &str,
) -> Result<(), S3Error> {
    let head = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .map_err(|e| sdk_error("HeadObject", target, e))?;
    let got = head.content_length.unwrap_or(-1);
    if got != size as i64 {
        return Err(err(
            "HeadObject",
            target,
            format!("the object has {got} bytes, the segment {size}"),
            true,
        ));
    }
    if let Some(remote) = head.checksum_crc32.as_deref() {
        // A multipart object reports `<crc>-<parts>` (or, on some servers, the bare value).
        let bare = crc.split('-').next().unwrap_or(crc);
        if remote != crc && remote != bare {
            return Err(err(
                "HeadObject",
                target,
                format!("the object's CRC32 {remote} is not the segment's {crc}"),
                true,
            ));
        }
    }
    Ok(())
}

/// One object of a listing.
#[derive(Debug, Clone)]
pub struct Object {
    pub key: String,
    pub size: u64,
}

/// Every object under `prefix` (which ends with `/` for a "directory").
pub async fn list(client: &Client, bucket: &str, prefix: &str) -> Result<Vec<Object>, S3Error> {
    let target = format!("s3://{bucket}/{prefix}");
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| sdk_error("ListObjectsV2", &target, e))?;
        for o in page.contents.unwrap_or_default() {
            if let Some(key) = o.key {
                out.push(Object { key, size: o.size.unwrap_or(0).max(0) as u64 });
            }
        }
        match page.next_continuation_token {
            Some(t) if page.is_truncated == Some(true) => token = Some(t),
            _ => break,
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// The "directories" directly under `prefix` (a listing with delimiter `/`).
pub async fn list_dirs(client: &Client, bucket: &str, prefix: &str) -> Result<Vec<String>, S3Error> {
    let target = format!("s3://{bucket}/{prefix}");
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .delimiter("/")
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| sdk_error("ListObjectsV2", &target, e))?;
        out.extend(page.common_prefixes.unwrap_or_default().into_iter().filter_map(|p| p.prefix));
        match page.next_continuation_token {
            Some(t) if page.is_truncated == Some(true) => token = Some(t),
            _ => break,
        }
    }
    out.sort();
    Ok(out)
}

/// Bytes `start .. start + len` of an object (a ranged GET).
pub async fn get_range(
    client: &Client,
    bucket: &str,
    key: &str,
    start: u64,
    len: u64,
) -> Result<bytes::Bytes, S3Error> {
    let target = format!("s3://{bucket}/{key}");
    if len == 0 {
        return Ok(bytes::Bytes::new());
    }
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(format!("bytes={start}-{}", start + len - 1))
        .send()
        .await
        .map_err(|e| sdk_error("GetObject", &target, e))?;
    let data = out
        .body
        .collect()
        .await
        .map_err(|e| err("GetObject", &target, format!("reading the body: {e}"), true))?
        .into_bytes();
    if data.len() as u64 != len {
        return Err(err(
            "GetObject",
            &target,
            format!("asked for {len} bytes at {start}, got {}", data.len()),
            true,
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = S3Url::parse("s3://my-bucket/a/b/").unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("my-bucket", "a/b"));
        assert_eq!(u.key("logs/2026/11/28/1-00.parquet"), "a/b/logs/2026/11/28/1-00.parquet");
        assert_eq!(u.relative("a/b/logs/x.parquet"), Some("logs/x.parquet"));
        assert_eq!(u.relative("a/bc/logs/x.parquet"), None);
        assert_eq!(u.to_string(), "s3://my-bucket/a/b");
        let root = S3Url::parse("s3://bucket").unwrap();
        assert_eq!(root.key("x"), "x");
        assert_eq!(root.to_string(), "s3://bucket");
        for bad in
            ["s3://", "s3://Upper", "s3://ab", "s3://b_x/p", "s3://bucket/a//b", "s3://bucket/../x", "/tmp"]
        {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn crc_is_s3_encoding() {
        // S3's documented example: CRC32 of "Hello World" is 0x4A17B156 → "ShexVg==".
        assert_eq!(crc32_b64(b"Hello World").1, "ShexVg==");
    }
}
