//! The AWS stand-ins of the KMS and S3 tests: the moto server (`moto[server]` from
//! tests/interop/requirements.txt) run by the interop Python on a free loopback port.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::python;

/// The environment every AWS client here gets: the endpoint on `port`, a region and dummy
/// credentials, and nothing from the developer's own AWS setup.
pub fn aws_env(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_REGION", "eu-west-1".into()),
        ("AWS_DEFAULT_REGION", "eu-west-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
    ]
}

/// Waits until something accepts connections on `port`: readiness, not timing, bounded so
/// that a broken install fails the test instead of hanging it.
pub fn wait_listening(port: u16) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < until, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A moto server process on `port`; killed on drop.
pub struct Moto {
    child: Child,
}

impl Moto {
    pub fn start(port: u16) -> Moto {
        let child = Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto (pip install 'moto[server]')");
        wait_listening(port);
        Moto { child }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
