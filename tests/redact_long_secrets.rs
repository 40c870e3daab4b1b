//! Issue 12: a credential longer than the bytes read to decide it (4 KiB) is masked to its
//! delimiter whatever its length, in the whole-input engine, in the naive reference and in a
//! stream where the value spans many pieces. Each case is a secret of 5 KiB and of 70 KiB made
//! of `Q` (a byte nothing else in the line holds), so "no `Q` in the output" means no byte of
//! it survived.

use std::sync::Arc;

use proptest::prelude::*;
use sealtrail::redact::{Counts, Detector, Mask, Options, Redactor, naive};

/// A line template: `{}` is the secret. The expected output, with `{}` the mask.
struct Case {
    det: Detector,
    line: &'static str,
    want: &'static str,
}

const CASES: &[Case] = &[
    Case {
        det: Detector::SecretField,
        line: "login password={} user=bob\n",
        want: "login password={} user=bob\n",
    },
    Case {
        det: Detector::SecretField,
        line: "{\"user\":\"bob\",\"password\":\"{}\",\"ok\":true}\n",
        want: "{\"user\":\"bob\",\"password\":\"{}\",\"ok\":true}\n",
    },
    Case {
        det: Detector::SecretField,
        line: "{\"msg\":\"{\\\"client_secret\\\":\\\"{}\\\"}\"}\n",
        want: "{\"msg\":\"{\\\"client_secret\\\":\\\"{}\\\"}\"}\n",
    },
    Case { det: Detector::SecretField, line: "api_key: '{}' done\n", want: "api_key: '{}' done\n" },
    Case {
        det: Detector::Authorization,
        line: "GET / Authorization: Bearer {} HTTP/1.1\n",
        want: "GET / Authorization: Bearer {} HTTP/1.1\n",
    },
    Case {
        det: Detector::Authorization,
        line: "{\"Authorization\":\"Basic {}\",\"x\":1}\n",
        want: "{\"Authorization\":\"Basic {}\",\"x\":1}\n",
    },
    Case { det: Detector::Authorization, line: "authorization: {}\n", want: "authorization: {}\n" },
    Case {
        det: Detector::Authorization,
        line: "Authorization: Digest username=\"bob\", response=\"{}\", opaque=\"x\"\n",
        want: "Authorization: Digest username=\"bob\", response=\"{}\", opaque=\"x\"\n",
    },
    Case {
        det: Detector::Authorization,
        line: "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/x, Signature={}\n",
        want: "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/x, Signature={}\n",
    },
    Case {
        det: Detector::ConnectionString,
        line: "Server=db;User Id=sa;Password={};Encrypt=true\n",
        want: "Server=db;User Id=sa;Password={};Encrypt=true\n",
    },
    Case {
        det: Detector::ConnectionString,
        line: "host=db user=app password={} dbname=x\n",
        want: "host=db user=app password={} dbname=x\n",
    },
    Case { det: Detector::Jwt, line: "t eyJhbGciOiJIUzI1NiJ9.{}.c2ln end\n", want: "t {} end\n" },
    Case { det: Detector::Jwt, line: "t eyJ{} end\n", want: "t {} end\n" },
    Case { det: Detector::PrefixedToken, line: "push ghp_{} ok\n", want: "push ghp_{} ok\n" },
    Case {
        det: Detector::UrlCredentials,
        line: "GET /x?access_token={}&page=2\n",
        want: "GET /x?access_token={}&page=2\n",
    },
];

fn fill(template: &str, v: &str) -> String {
    template.replacen("{}", v, 1)
}

fn whole(r: &Redactor, input: &[u8]) -> (Vec<u8>, Counts) {
    let mut c = Counts::default();
    (r.redact(input, &mut c).into_owned(), c)
}

fn streamed(r: &Arc<Redactor>, input: &[u8], step: usize) -> (Vec<u8>, Counts) {
    let mut s = r.stream();
    let mut out = Vec::new();
    for piece in input.chunks(step) {
        s.push(piece, &mut out);
    }
    s.finish(&mut out);
    (out, s.counts())
}

fn check(r: &Arc<Redactor>, input: &str, want: &str, det: Detector, steps: &[usize]) {
    let (out, counts) = whole(r, input.as_bytes());
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains('Q'), "{det}: a byte of the secret survived in {:.200}", text);
    assert_eq!(text, want, "{det}");
    assert_eq!(counts.get(det), 1, "{det}: {counts:?}");
    for &step in steps {
        assert_eq!(streamed(r, input.as_bytes(), step), (out.clone(), counts), "{det}: pieces of {step}");
    }
}

fn cases_with(len: usize, steps: &[usize]) {
    let r = Arc::new(Redactor::with_defaults());
    let secret = "Q".repeat(len);
    for c in CASES {
        check(&r, &fill(c.line, &secret), &fill(c.want, "****"), c.det, steps);
    }
}

#[test]
fn a_5_kib_credential_is_masked_to_its_delimiter() {
    cases_with(5 * 1024, &[1, 7, 4096, 64 * 1024]);
}

#[test]
fn a_70_kib_credential_is_masked_to_its_delimiter() {
    cases_with(70 * 1024, &[997, 4096, 64 * 1024]);
}

/// The naive reference (what the property tests compare the engine with) masks long values
/// the same way.
#[test]
fn the_naive_reference_masks_long_values_too() {
    let opts = Options::default();
    let r = Redactor::new(&opts).unwrap();
    let secret = "Q".repeat(5 * 1024);
    for c in CASES {
        let input = fill(c.line, &secret);
        let (out, _) = naive::redact(&opts, input.as_bytes());
        assert!(!out.contains(&b'Q'), "{}", c.det);
        assert_eq!(naive::redact(&opts, input.as_bytes()), whole(&r, input.as_bytes()), "{}", c.det);
    }
}

/// A PEM body longer than the part searched for its `-----END` line (16 KiB): masked to the
/// marker, which keeps its line, and across every chunking.
#[test]
fn a_long_private_key_body_is_masked_to_its_end_line() {
    let r = Arc::new(Redactor::with_defaults());
    for (lines, sep) in [(400usize, "\n"), (1200, "\n"), (1200, "\\n")] {
        let body: String = (0..lines).map(|_| format!("{}{sep}", "Q".repeat(64))).collect();
        let input = format!(
            "k={{\"key\":\"-----BEGIN RSA PRIVATE KEY-----{sep}{body}-----END RSA PRIVATE KEY-----\"}}\n"
        );
        let want = format!(
            "k={{\"key\":\"-----BEGIN RSA PRIVATE KEY-----{sep}****{sep}-----END RSA PRIVATE KEY-----\"}}\n"
        );
        check(&r, &input, &want, Detector::PrivateKey, &[1000, 4096, 64 * 1024]);
    }
    // A body that never ends is masked to the first byte that cannot be in one.
    let input = format!("-----BEGIN PRIVATE KEY-----\n{}\n\"}}, next\n", "QQQQ\n".repeat(5000));
    check(&r, &input, "-----BEGIN PRIVATE KEY-----\n****\n\n\"}, next\n", Detector::PrivateKey, &[4096]);
}

/// With the `hmac` mask the token of a long value is the same whole and streamed (it is
/// computed over every byte of the value, fed piece by piece).
#[test]
fn hmac_tokens_of_long_values_do_not_depend_on_chunking() {
    let opts = Options { mask: Mask::Hmac, hmac_key: Some([9; 32]), ..Options::default() };
    let r = Arc::new(Redactor::new(&opts).unwrap());
    let secret = "Q".repeat(70 * 1024);
    for c in CASES {
        let input = fill(c.line, &secret);
        let want = whole(&r, input.as_bytes());
        assert!(!want.0.contains(&b'Q'), "{}", c.det);
        for step in [4096, 10_000] {
            assert_eq!(streamed(&r, input.as_bytes(), step), want, "{} step {step}", c.det);
        }
    }
}

/// A `password=` value that is also a long JSON Web Token: two open values start at the same
/// byte and end by different rules; the stream waits for the first end and agrees with the
/// whole-input result.
#[test]
fn two_open_values_at_one_start_agree_with_the_whole_input() {
    let r = Arc::new(Redactor::with_defaults());
    for tail in ["~rest x\n", ".a b\n", " x\n"] {
        let input = format!("password=eyJ{}{tail}", "Q".repeat(9000));
        let want = whole(&r, input.as_bytes());
        assert!(!want.0.contains(&b'Q'));
        for step in [1000, 4096] {
            assert_eq!(streamed(&r, input.as_bytes(), step), want, "{tail:?} step {step}");
        }
    }
}

fn secret_byte() -> impl Strategy<Value = u8> {
    prop::sample::select(b"QRSTUVWXYZqrstuvwxyz0123456789".to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
    ))]

    /// No byte of a generated long secret survives, whole or streamed in generated pieces,
    /// and the stream writes what the whole-input call writes.
    #[test]
    fn no_byte_of_a_long_secret_survives(
        case in 0..CASES.len(),
        secret in prop::collection::vec(secret_byte(), 4200..20_000),
        cuts in prop::collection::vec(1usize..9000, 1..6),
    ) {
        let r = Arc::new(Redactor::with_defaults());
        let secret = String::from_utf8(secret).unwrap();
        let c = &CASES[case];
        let input = fill(c.line, &secret);
        let (out, counts) = whole(&r, input.as_bytes());
        prop_assert_eq!(String::from_utf8_lossy(&out), fill(c.want, "****"));
        prop_assert_eq!(counts.get(c.det), 1);
        let mut s = r.stream();
        let mut sout = Vec::new();
        let mut at = 0;
        for (i, len) in cuts.iter().cycle().enumerate() {
            if at >= input.len() || i > 10_000 {
                break;
            }
            let next = (at + len).min(input.len());
            s.push(&input.as_bytes()[at..next], &mut sout);
            at = next;
        }
        s.push(&input.as_bytes()[at..], &mut sout);
        s.finish(&mut sout);
        prop_assert_eq!(sout, out);
    }
}

/// An anchor every few bytes of one long value (`password=password=…`): the later anchors'
/// values start inside the first one and end where it does (the engine reads the value once);
/// whole, naive and streamed agree.
#[test]
fn anchors_inside_a_long_value_end_where_it_does() {
    let opts = Options::default();
    let r = Arc::new(Redactor::new(&opts).unwrap());
    for unit in ["password=", "api_key=", "\"password\":\"", "Server=x;Password=", "authorization: "] {
        let input = format!("{}\nend\n", unit.repeat(3000));
        let want = whole(&r, input.as_bytes());
        if unit.ends_with('=') && !unit.contains(';') {
            // One value, masked once.
            assert_eq!(String::from_utf8_lossy(&want.0), format!("{unit}****\nend\n"));
        }
        assert_eq!(naive::redact(&opts, input.as_bytes()), want, "{unit}");
        for step in [1000, 4096] {
            assert_eq!(streamed(&r, input.as_bytes(), step), want, "{unit} step {step}");
        }
    }
}
