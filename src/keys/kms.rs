//! AWS KMS customer managed keys: the second [`KeyProvider`], and [`KeyChain`], the provider
//! the sink and the readers use, which sends `kms:` references here and key names to the
//! local keyring.
//!
//! A key reference `kms:<key ARN>`, `kms:alias/<name>` (or `kms:<alias ARN>`) names a KMS key
//! wherever a key name is accepted. Sealing a segment is one `GenerateDataKey` (AES_256): the
//! plaintext data key encrypts the segment and is zeroized, the ciphertext blob (base64) is the
//! PKMT1 `wrappedDEK` and the key ARN KMS answers with is the `masterKeyID`. Reading is one
//! `Decrypt` per (key, wrapped data key) and query, cached by [`crate::segment::reader`]'s
//! retriever.
//!
//! **Encryption context.** Every call carries the constant context
//! [`ENCRYPTION_CONTEXT`] = `{"sealtrail:purpose": "parquet-segment-dek"}`. A standard Parquet
//! reader's KMS client is handed only the wrapped key and the master key id
//! (`KmsClient.unwrap_key(wrapped_key, master_key_identifier)` in pyarrow, `unwrapKey` in
//! parquet-java), so the context must be rebuildable from nothing else: a constant is, and it
//! still lets an IAM or key policy condition (`kms:EncryptionContext:sealtrail:purpose`)
//! restrict the key to sealing segments. A ciphertext from another use of the key (no or
//! another context) does not decrypt as a segment key.
//!
//! Credentials and region come from the standard AWS chain (`aws-config`: environment, shared
//! files and profiles, web identity, ECS/EKS container credentials, IMDSv2); the endpoint from
//! `[keys] kms_endpoint`, else `AWS_ENDPOINT_URL_KMS` / `AWS_ENDPOINT_URL`. Nothing talks to AWS
//! before the first seal or read: the client is built on first use, so the Lambda extension
//! still registers within its start budget.
//!
//! The [`KeyProvider`] trait is synchronous (the parquet crate's key retriever is) while the
//! SDK is async: calls run on a one-thread tokio runtime owned by the provider and the caller
//! waits on a channel, so it works from a blocking thread, a plain thread and the CLI alike.
//! Every call is recorded in the keyring's hash-chained audit log ([`super::audit`]) with its
//! operation, key and outcome.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kms::Client;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use super::envelope::KeyMetadata;
use super::provider::LocalProvider;
use super::{KeyError, KeyProvider, Material};

/// The prefix of a KMS key reference.
pub const PREFIX: &str = "kms:";

/// The encryption context of every sealtrail KMS call (see the module docs for why it is a
/// constant).
pub const ENCRYPTION_CONTEXT: (&str, &str) = ("sealtrail:purpose", "parquet-segment-dek");

/// The PKMT1 `kmsInstanceURL` of KMS-wrapped segments (the `kmsInstanceID` is the region).
pub const KMS_INSTANCE_URL: &str = "aws-kms";

/// One KMS call, connection and retries included, fails after this long.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Connecting to the KMS endpoint fails after this long (then the SDK retries).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A caller gives up waiting for the provider's runtime after this long (beyond the SDK's own
/// operation timeout, so it only fires if the runtime is wedged).
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Is `key` a KMS key reference (`kms:…`)?
pub fn is_kms_ref(key: &str) -> bool {
    key.starts_with(PREFIX)
}

/// Does a segment's `masterKeyID` name a KMS key (a key ARN)?
pub fn is_kms_master_key_id(id: &str) -> bool {
    id.starts_with("arn:") && id.contains(":kms:")
}

/// Checks a key reference: a local key name, or `kms:` followed by a key ARN, an alias ARN,
/// `alias/<name>` or a key id.
pub fn check_ref(key: &str) -> Result<(), KeyError> {
    let Some(id) = key.strip_prefix(PREFIX) else { return super::check_name(key) };
    let ok_chars =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-:.".contains(&b));
    let ok = id.len() <= 2048
        && ok_chars(id)
        && (id.starts_with("alias/") && id.len() > 6
            || is_kms_master_key_id(id) && (id.contains(":key/") || id.contains(":alias/"))
            || !id.contains('/') && !id.contains(':'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::InvalidName(format!(
            "{key}` (a KMS key is `kms:arn:aws:kms:<region>:<account>:key/<id>` or `kms:alias/<name>`"
        )))
    }
}

/// Where the KMS client connects and where its calls are recorded.
#[derive(Debug, Clone, Default)]
pub struct KmsOptions {
    /// An endpoint URL overriding the AWS default (`[keys] kms_endpoint`); the SDK also reads
    /// `AWS_ENDPOINT_URL_KMS` and `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// The keyring directory: the audit log of KMS calls is `<dir>/audit.jsonl`.
    pub audit_dir: PathBuf,
}

/// The AWS KMS [`KeyProvider`] (see the module docs).
pub struct KmsProvider {
    options: KmsOptions,
    /// Runs the SDK's futures; `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    /// Built on first use (no AWS call, not even a region lookup, before it).
    client: Arc<tokio::sync::OnceCell<Client>>,
    /// Serialises audit appends of this process (the log itself is also `flock`ed).
    audit: Mutex<()>,
}

impl std::fmt::Debug for KmsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsProvider").field("options", &self.options).finish_non_exhaustive()
    }
}

impl Drop for KmsProvider {
    fn drop(&mut self) {
        // A runtime dropped inside another runtime's worker panics; this never blocks.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl KmsProvider {
    /// A provider; starts one runtime thread, makes no AWS call.
    pub fn new(options: KmsOptions) -> Result<KmsProvider, KeyError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sealtrail-kms")
            .enable_all()
            .build()
            .map_err(|source| KeyError::Io { path: PathBuf::from("<kms runtime>"), source })?;
        Ok(KmsProvider {
            options,
            runtime: Some(runtime),
            client: Arc::new(tokio::sync::OnceCell::new()),
            audit: Mutex::new(()),
        })
    }

    /// Runs `f(client)` on the provider's runtime and waits for it.
    fn call<T, F, Fut>(&self, op: &'static str, key: &str, f: F) -> Result<T, KeyError>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, KeyError>> + Send + 'static,
    {
        let Some(rt) = self.runtime.as_ref() else {
            return Err(kms_error(op, key, "the KMS provider is shutting down"));
        };
        let cell = self.client.clone();
        let endpoint = self.options.endpoint.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let client = cell.get_or_init(|| build_client(endpoint)).await.clone();
            let _ = tx.send(f(client).await);
        });
        rx.recv_timeout(WAIT_LIMIT)
            .unwrap_or_else(|_| Err(kms_error(op, key, "no answer from the KMS client in time")))
    }

    /// Appends one KMS call to the audit log. A call that cannot be recorded fails.
    fn record(&self, op: &str, key: &str, outcome: &str) -> Result<(), KeyError> {
        let _guard = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        let dir = &self.options.audit_dir;
        if !dir.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(super::io_err(dir))?;
        }
        let mut filters = serde_json::Map::new();
        filters.insert("kms_operation".into(), op.into());
        filters.insert("outcome".into(), outcome.into());
        let rec = super::audit::Record {
            uid: super::audit::current_uid(),
            segments: Vec::new(),
            key_ids: vec![key.to_owned()],
            filters,
            output: format!("kms:{op}"),
        };
        super::audit::append(dir, &rec)
            .map(|_| ())
            .map_err(|e| kms_error(op, key, &format!("the call could not be recorded in the audit log: {e}")))
    }
}

/// What `sealtrail keys show kms:…` prints (DescribeKey).
#[derive(Debug, Clone)]
pub struct KmsKeyInfo {
    pub arn: String,
    /// `Enabled`, `Disabled`, `PendingDeletion`, …
    pub state: String,
    pub key_spec: String,
    pub key_manager: String,
    pub region: String,
}

impl KmsProvider {
    /// DescribeKey on `id` (the reference without `kms:`), recorded in the audit log.
    pub fn describe(&self, id: &str) -> Result<KmsKeyInfo, KeyError> {
        const OP: &str = "DescribeKey";
        let key = id.to_owned();
        let r = self.call(OP, id, move |client| async move {
            let out = client.describe_key().key_id(&key).send().await.map_err(|e| sdk_error(OP, &key, e))?;
            let md = out.key_metadata.ok_or_else(|| kms_error(OP, &key, "no key metadata in the answer"))?;
            let arn = md.arn.clone().unwrap_or_default();
            Ok(KmsKeyInfo {
                region: region_of(&arn).to_owned(),
                arn,
                state: md.key_state.as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                key_spec: md.key_spec.as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                key_manager: md.key_manager.as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            })
        });
        let audited = r.as_ref().map(|i| i.arn.as_str()).unwrap_or(id);
        let outcome = match &r {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        self.record(OP, audited, &outcome)?;
        r
    }
}

/// The SDK client on the agent's own HTTP stack: hyper 1 and rustls with ring.
async fn build_client(endpoint: Option<String>) -> Client {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(OPERATION_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts);
    if let Some(ep) = endpoint {
        loader = loader.endpoint_url(ep);
    }
    Client::new(&loader.load().await)
}

fn kms_error(op: &str, key: &str, reason: &str) -> KeyError {
    KeyError::Kms(Box::new(super::KmsFailure {
        op: op.to_owned(),
        key: key.to_owned(),
        reason: reason.to_owned(),
        retryable: false,
    }))
}

/// A clear error from an SDK failure: what was denied, disabled, unreachable.
fn sdk_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &str,
    key: &str,
    e: SdkError<E>,
) -> KeyError {
    let (reason, retryable) = match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("unknown");
            let msg = err.message().unwrap_or("");
            match code {
                "AccessDeniedException" => (
                    format!("access denied: the caller lacks kms:{op} on this key or its encryption context ({msg})"),
                    false,
                ),
                "DisabledException" => ("the key is disabled".to_owned(), false),
                "KMSInvalidStateException" => {
                    (format!("the key is disabled or pending deletion ({msg})"), false)
                }
                "NotFoundException" => {
                    (format!("key not found: check the key id and the region ({msg})"), false)
                }
                "InvalidCiphertextException" => (
                    "the wrapped data key does not decrypt under this key with the sealtrail encryption context (wrong context, key or tampered key metadata)".to_owned(),
                    false,
                ),
                "IncorrectKeyException" => ("the data key was wrapped by another KMS key".to_owned(), false),
                "ThrottlingException" | "LimitExceededException" | "KMSInternalException"
                | "DependencyTimeoutException" => (format!("{code} (retried with backoff): {msg}"), true),
                _ => (format!("{code}: {msg}"), false),
            }
        }
        SdkError::DispatchFailure(d) => (
            format!(
                "KMS is unreachable ({}); check the network, the region and the endpoint",
                d.as_connector_error().map(|c| c.to_string()).unwrap_or_default()
            ),
            true,
        ),
        SdkError::TimeoutError(_) => ("KMS did not answer in time".to_owned(), true),
        SdkError::ConstructionFailure(_) => {
            ("no usable AWS configuration (region or credentials missing?)".to_owned(), false)
        }
        other => (format!("{}", aws_sdk_kms::error::DisplayErrorContext(other)), true),
    };
    KeyError::Kms(Box::new(super::KmsFailure { op: op.to_owned(), key: key.to_owned(), reason, retryable }))
}

fn context_map() -> std::collections::HashMap<String, String> {
    std::iter::once((ENCRYPTION_CONTEXT.0.to_owned(), ENCRYPTION_CONTEXT.1.to_owned())).collect()
}

/// The region inside a KMS key ARN (`arn:aws:kms:<region>:…`).
fn region_of(arn: &str) -> &str {
    arn.split(':').nth(3).unwrap_or("")
}

impl KeyProvider for KmsProvider {
    /// `name` is the reference without `kms:`.
    fn wrap_new_dek(&self, name: &str) -> Result<(Material, KeyMetadata), KeyError> {
        const OP: &str = "GenerateDataKey";
        let key = name.to_owned();
        let r = self.call(OP, name, move |client| async move {
            let out = client
                .generate_data_key()
                .key_id(&key)
                .key_spec(DataKeySpec::Aes256)
                .set_encryption_context(Some(context_map()))
                .send()
                .await
                .map_err(|e| sdk_error(OP, &key, e))?;
            let plain = Zeroizing::new(out.plaintext.map(Blob::into_inner).unwrap_or_default());
            let arn = out.key_id.unwrap_or_default();
            let blob = out.ciphertext_blob.map(Blob::into_inner).unwrap_or_default();
            if plain.len() != 32 || blob.is_empty() || !is_kms_master_key_id(&arn) {
                return Err(kms_error(OP, &key, "KMS returned a malformed data key"));
            }
            let mut dek = Zeroizing::new([0u8; 32]);
            dek.copy_from_slice(&plain);
            let mut km = KeyMetadata::new(arn, B64.encode(blob));
            km.kms_instance_id = region_of(&km.master_key_id).to_owned();
            km.kms_instance_url = KMS_INSTANCE_URL.to_owned();
            Ok((dek, km))
        });
        let audited_key = r.as_ref().map(|(_, km)| km.master_key_id.as_str()).unwrap_or(name);
        let outcome = match &r {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        self.record(OP, audited_key, &outcome)?;
        r
    }

    fn unwrap_dek(&self, metadata: &KeyMetadata) -> Result<Material, KeyError> {
        const OP: &str = "Decrypt";
        let arn = metadata.master_key_id.clone();
        let blob = B64
            .decode(&metadata.wrapped_dek)
            .map_err(|_| KeyError::BadMetadata(format!("wrappedDEK of `{arn}` is not base64")))?;
        let key = arn.clone();
        let r = self.call(OP, &arn, move |client| async move {
            let out = client
                .decrypt()
                .key_id(&key)
                .ciphertext_blob(Blob::new(blob))
                .set_encryption_context(Some(context_map()))
                .send()
                .await
                .map_err(|e| sdk_error(OP, &key, e))?;
            let plain = Zeroizing::new(out.plaintext.map(Blob::into_inner).unwrap_or_default());
            if plain.len() != 32 {
                return Err(kms_error(OP, &key, "the decrypted data key is not 32 bytes"));
            }
            let mut dek = Zeroizing::new([0u8; 32]);
            dek.copy_from_slice(&plain);
            Ok(dek)
        });
        let outcome = match &r {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        self.record(OP, &arn, &outcome)?;
        r
    }
}

/// The encryption context of the Lambda console's encryption helpers: the function's name
/// (values encrypted with the CLI, or by the console before about 2021, have none).
const LAMBDA_CONSOLE_CONTEXT: &str = "LambdaFunctionName";

impl KmsProvider {
    /// Decrypts the ciphertext of a `SEALTRAIL_KEY_<NAME>=kms:<base64>` variable (`var`):
    /// first with the Lambda console helper's context when `function` (the Lambda function
    /// name) is known, then without a context, as the KMS `Decrypt` of a value that the CLI
    /// encrypted needs. The key is named by the ciphertext itself. Recorded in the audit log.
    pub fn decrypt_env_value(
        &self,
        var: &str,
        ciphertext: Vec<u8>,
        function: Option<String>,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        const OP: &str = "Decrypt";
        let who = format!("env {var}");
        let key = who.clone();
        let r = self.call(OP, &who, move |client| async move {
            let mut contexts = Vec::new();
            if let Some(f) = function.as_ref().filter(|f| !f.is_empty()) {
                contexts.push(Some(std::iter::once((LAMBDA_CONSOLE_CONTEXT.to_owned(), f.clone())).collect()));
            }
            contexts.push(None);
            for context in contexts {
                let sent = client
                    .decrypt()
                    .ciphertext_blob(Blob::new(ciphertext.clone()))
                    .set_encryption_context(context)
                    .send()
                    .await;
                match sent {
                    Ok(out) => {
                        let arn = out.key_id.unwrap_or_default();
                        return Ok((Zeroizing::new(out.plaintext.map(Blob::into_inner).unwrap_or_default()), arn));
                    }
                    Err(SdkError::ServiceError(se)) if se.err().code() == Some("InvalidCiphertextException") => {}
                    Err(e) => return Err(sdk_error(OP, &key, e)),
                }
            }
            let tried = match &function {
                Some(f) if !f.is_empty() => format!("with the Lambda console's context ({LAMBDA_CONSOLE_CONTEXT}={f}) or without one"),
                _ => "without an encryption context (AWS_LAMBDA_FUNCTION_NAME is not set, so the Lambda console's context was not tried)".to_owned(),
            };
            Err(kms_error(OP, &key, &format!("the value does not decrypt {tried}: was it encrypted for this function, under a key this role may use?")))
        });
        let (audited, outcome) = match &r {
            Ok((_, arn)) if !arn.is_empty() => (arn.as_str(), "ok".to_owned()),
            Ok(_) => (who.as_str(), "ok".to_owned()),
            Err(e) => (who.as_str(), e.to_string()),
        };
        self.record(OP, audited, &outcome)?;
        r.map(|(plain, _)| plain)
    }
}

/// The key material of a `SEALTRAIL_KEY_<NAME>=kms:<base64>` variable, decrypted once per
/// process (a variable does not change while it runs) through one process-wide provider whose
/// calls are audited under `audit_dir`. The decrypted value is what the variable would hold
/// in clear (`base64:<32 bytes>`) or the 32 raw bytes (`aws kms encrypt --plaintext
/// fileb://key.bin`).
pub fn env_key_material(
    var: &str,
    ciphertext_b64: &str,
    audit_dir: &std::path::Path,
) -> Result<Material, KeyError> {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static PROVIDER: OnceLock<Result<KmsProvider, String>> = OnceLock::new();
    static DECRYPTED: OnceLock<Mutex<HashMap<String, Material>>> = OnceLock::new();
    let cache = DECRYPTED.get_or_init(Mutex::default);
    // Held across the call: one decrypt per variable even when several components start at once.
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = cache.get(var) {
        return Ok(m.clone());
    }
    let bad = |reason: &str| KeyError::BadMaterial { origin: var.to_owned(), reason: reason.to_owned() };
    let blob = B64
        .decode(ciphertext_b64.trim())
        .map_err(|_| bad("after `kms:` comes the base64 of a KMS ciphertext, and this is not base64"))?;
    let provider = PROVIDER
        .get_or_init(|| {
            KmsProvider::new(KmsOptions { endpoint: None, audit_dir: audit_dir.to_owned() })
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| kms_error("Decrypt", var, e))?;
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok();
    let plain = provider.decrypt_env_value(var, blob, function)?;
    let material = match std::str::from_utf8(&plain) {
        Ok(text) if text.trim().starts_with("base64:") => super::parse_material(text, var)?,
        _ if plain.len() == 32 => {
            let mut m = Zeroizing::new([0u8; 32]);
            m.copy_from_slice(&plain);
            m
        }
        _ => return Err(bad("the decrypted value is neither `base64:<32 bytes>` nor 32 raw bytes")),
    };
    cache.insert(var.to_owned(), material.clone());
    Ok(material)
}

/// The provider the sink, `segments` and `query` use: `kms:` references and key-ARN key
/// metadata go to AWS KMS (the provider is created on first use), everything else to the
/// local keyring. Clones share one KMS provider (and its runtime and client cache).
#[derive(Clone)]
pub struct KeyChain {
    local: LocalProvider,
    kms_options: KmsOptions,
    kms: Arc<std::sync::OnceLock<Result<KmsProvider, String>>>,
}

impl KeyChain {
    pub fn new(local: LocalProvider, kms_options: KmsOptions) -> KeyChain {
        KeyChain { local, kms_options, kms: Arc::new(std::sync::OnceLock::new()) }
    }

    pub fn local(&self) -> &LocalProvider {
        &self.local
    }

    fn kms(&self) -> Result<&KmsProvider, KeyError> {
        self.kms
            .get_or_init(|| KmsProvider::new(self.kms_options.clone()).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| kms_error("start", "-", e))
    }
}

impl KeyProvider for KeyChain {
    fn wrap_new_dek(&self, name: &str) -> Result<(Material, KeyMetadata), KeyError> {
        match name.strip_prefix(PREFIX) {
            Some(id) => self.kms()?.wrap_new_dek(id),
            None => self.local.wrap_new_dek(name),
        }
    }

    fn unwrap_dek(&self, metadata: &KeyMetadata) -> Result<Material, KeyError> {
        if is_kms_master_key_id(&metadata.master_key_id) {
            self.kms()?.unwrap_dek(metadata)
        } else {
            self.local.unwrap_dek(metadata)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_references() {
        for ok in [
            "default",
            "kms:alias/payments",
            "kms:arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "kms:arn:aws:kms:eu-west-1:111122223333:alias/payments",
            "kms:1234abcd-12ab-34cd-56ef-1234567890ab",
        ] {
            assert!(check_ref(ok).is_ok(), "{ok}");
        }
        for bad in ["kms:", "kms:alias/", "kms:arn:aws:s3:::bucket", "kms:a b", "bad name"] {
            assert!(check_ref(bad).is_err(), "{bad}");
        }
        assert!(is_kms_master_key_id("arn:aws:kms:eu-west-1:111122223333:key/x"));
        assert!(!is_kms_master_key_id("default#1"));
        assert_eq!(region_of("arn:aws:kms:eu-west-1:111122223333:key/x"), "eu-west-1");
    }
}
