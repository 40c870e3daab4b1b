//! CloudWatch Logs data protection policies: the JSON document `PutDataProtectionPolicy`
//! takes, read so that a team reuses the policy it already has.
//!
//! The data identifiers of the policy's `Deidentify` statements (the ones that mask) become
//! detectors: managed identifiers (`arn:aws:dataprotection::aws:data-identifier/NAME`, any
//! partition) map to built-in detectors by [`MANAGED`], and custom identifiers
//! (`Configuration.CustomDataIdentifier`, `{"Name": …, "Regex": …}`) become patterns. A managed
//! identifier with no detector here, or a name that is neither managed nor custom, is an error
//! that lists every such identifier.
//!
//! ```
//! use sealtrail::redact::{Detector, policy};
//!
//! let p = policy::parse(r#"{
//!   "Name": "p", "Version": "2021-06-01",
//!   "Configuration": {"CustomDataIdentifier": [{"Name": "EmployeeId", "Regex": "EMP-[0-9]{6}"}]},
//!   "Statement": [
//!     {"Sid": "audit", "DataIdentifier": ["arn:aws:dataprotection::aws:data-identifier/CreditCardNumber", "EmployeeId"],
//!      "Operation": {"Audit": {"FindingsDestination": {}}}},
//!     {"Sid": "redact", "DataIdentifier": ["arn:aws:dataprotection::aws:data-identifier/CreditCardNumber", "EmployeeId"],
//!      "Operation": {"Deidentify": {"MaskConfig": {}}}}
//!   ]
//! }"#).unwrap();
//! assert_eq!(p.detectors, [Detector::Card]);
//! assert_eq!(p.patterns, ["EMP-[0-9]{6}"]);
//! ```

use serde::Deserialize;

use super::Detector;

/// Managed data identifiers and the detectors they map to.
pub const MANAGED: &[(&str, &[Detector])] = &[
    ("CreditCardNumber", &[Detector::Card]),
    ("BankAccountNumber-US", &[Detector::BankAccount]),
    ("BankAccountNumber-GB", &[Detector::BankAccount, Detector::Iban]),
    ("BankAccountNumber-DE", &[Detector::BankAccount, Detector::Iban]),
    ("BankAccountNumber-FR", &[Detector::BankAccount, Detector::Iban]),
    ("BankAccountNumber-ES", &[Detector::BankAccount, Detector::Iban]),
    ("BankAccountNumber-IT", &[Detector::BankAccount, Detector::Iban]),
    ("AwsSecretKey", &[Detector::AwsSecretKey, Detector::AwsAccessKey]),
    ("OpenSshPrivateKey", &[Detector::PrivateKey]),
    ("PgpPrivateKey", &[Detector::PrivateKey]),
    ("PkcsPrivateKey", &[Detector::PrivateKey]),
    ("PuttyPrivateKey", &[Detector::PrivateKey]),
];

/// What a policy asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Built-in detectors, in [`Detector`] order, each once.
    pub detectors: Vec<Detector>,
    /// The regexes of the custom identifiers used, in the order the policy names them.
    pub patterns: Vec<String>,
}

/// Why a policy could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("not a data protection policy: {0}")]
    Json(String),
    #[error("the policy has no statement with a `Deidentify` operation: it would mask nothing")]
    NoDeidentify,
    #[error("unsupported data identifiers: {}; supported managed identifiers: {}", .0.join(", "), supported())]
    Unsupported(Vec<String>),
    #[error("custom data identifier `{name}`: {message}")]
    Custom { name: String, message: String },
}

fn supported() -> String {
    MANAGED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Doc {
    #[serde(default)]
    configuration: Option<Configuration>,
    #[serde(default)]
    statement: Vec<Statement>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Configuration {
    #[serde(default)]
    custom_data_identifier: Vec<Custom>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Custom {
    name: String,
    regex: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Statement {
    #[serde(default)]
    data_identifier: Vec<String>,
    #[serde(default)]
    operation: serde_json::Map<String, serde_json::Value>,
}

/// The managed identifier name in an ARN (`arn:<partition>:dataprotection::aws:data-identifier/NAME`).
fn managed_name(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("arn:")?;
    let (_partition, rest) = rest.split_once(':')?;
    rest.strip_prefix("dataprotection::aws:data-identifier/")
}

/// Reads a policy document.
///
/// # Errors
/// Invalid JSON or shape, no `Deidentify` statement, unsupported or unknown identifiers (all
/// listed), a custom regex that does not compile.
pub fn parse(text: &str) -> Result<Policy, PolicyError> {
    let doc: Doc = serde_json::from_str(text).map_err(|e| PolicyError::Json(e.to_string()))?;
    let customs = doc.configuration.map(|c| c.custom_data_identifier).unwrap_or_default();
    let ids: Vec<&String> = doc
        .statement
        .iter()
        .filter(|s| s.operation.contains_key("Deidentify"))
        .flat_map(|s| s.data_identifier.iter())
        .collect();
    if !doc.statement.iter().any(|s| s.operation.contains_key("Deidentify")) {
        return Err(PolicyError::NoDeidentify);
    }
    let mut detectors = Vec::new();
    let mut patterns = Vec::new();
    let mut unsupported = Vec::new();
    for id in ids {
        if let Some(name) = managed_name(id) {
            match MANAGED.iter().find(|(n, _)| *n == name) {
                Some((_, dets)) => detectors.extend_from_slice(dets),
                None => unsupported.push(name.to_owned()),
            }
        } else if let Some(c) = customs.iter().find(|c| &c.name == id) {
            regex::Regex::new(&c.regex)
                .map_err(|e| PolicyError::Custom { name: c.name.clone(), message: e.to_string() })?;
            if !patterns.contains(&c.regex) {
                patterns.push(c.regex.clone());
            }
        } else {
            unsupported.push(format!("{id} (neither a managed identifier ARN nor a custom identifier)"));
        }
    }
    if !unsupported.is_empty() {
        unsupported.dedup();
        return Err(PolicyError::Unsupported(unsupported));
    }
    detectors.sort();
    detectors.dedup();
    Ok(Policy { detectors, patterns })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ids: &[&str], customs: &str) -> String {
        let ids: Vec<String> = ids.iter().map(|i| format!("\"{i}\"")).collect();
        format!(
            r#"{{"Name":"p","Version":"2021-06-01","Configuration":{{"CustomDataIdentifier":[{customs}]}},
            "Statement":[{{"Sid":"a","DataIdentifier":[{ids}],"Operation":{{"Audit":{{"FindingsDestination":{{}}}}}}}},
                         {{"Sid":"r","DataIdentifier":[{ids}],"Operation":{{"Deidentify":{{"MaskConfig":{{}}}}}}}}]}}"#,
            ids = ids.join(",")
        )
    }

    #[test]
    fn managed_and_custom_identifiers_map() {
        let p = parse(&policy(
            &[
                "arn:aws:dataprotection::aws:data-identifier/BankAccountNumber-US",
                "arn:aws-us-gov:dataprotection::aws:data-identifier/AwsSecretKey",
                "arn:aws:dataprotection::aws:data-identifier/CreditCardNumber",
                "Emp",
            ],
            r#"{"Name":"Emp","Regex":"EMP-\\d{6}"}"#,
        ))
        .unwrap();
        assert_eq!(
            p.detectors,
            [Detector::Card, Detector::BankAccount, Detector::AwsAccessKey, Detector::AwsSecretKey]
        );
        assert_eq!(p.patterns, [r"EMP-\d{6}"]);
    }

    #[test]
    fn errors_list_every_unsupported_identifier() {
        let e = parse(&policy(
            &[
                "arn:aws:dataprotection::aws:data-identifier/EmailAddress",
                "arn:aws:dataprotection::aws:data-identifier/CreditCardNumber",
                "arn:aws:dataprotection::aws:data-identifier/Ssn-US",
                "Nope",
            ],
            "",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("EmailAddress") && e.contains("Ssn-US") && e.contains("Nope (neither"), "{e}");
        assert!(!e.contains("CreditCardNumber,") || e.contains("supported managed identifiers"), "{e}");
        let e = parse(&policy(&["Bad"], r#"{"Name":"Bad","Regex":"("}"#)).unwrap_err().to_string();
        assert!(e.starts_with("custom data identifier `Bad`"), "{e}");
        assert!(matches!(parse("{\"Statement\": []}"), Err(PolicyError::NoDeidentify)));
        assert!(matches!(parse("[1]"), Err(PolicyError::Json(_))));
    }
}
