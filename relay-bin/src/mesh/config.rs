//! The `[mesh]` section of the node's config: this node's id, key and UDP address, its peers, and which
//! nodes may be home to which app's streams. Checked as a whole ([`MeshConfig::resolve`]) into what the
//! mesh runs with, with one clear error per mistake.
//!
//! Keys are X25519 keys in standard base64 (44 characters), as WireGuard writes them: `popline keygen`
//! writes a private key file and prints its public key, which peers put in their `[[mesh.peers]]`.

use super::core::MeshParams;
use super::placement::Origin;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;
use transport::crypto::keys::KEY_LEN;
use transport::crypto::StaticKeypair;

/// The mesh: off while `id` is empty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MeshConfig {
    /// This node's id in the mesh (empty: no mesh; the node serves only its own clients).
    pub id: String,
    /// UDP address the mesh's transport listens on.
    pub listen: String,
    /// File holding this node's private key (base64), as `popline keygen` writes it.
    pub key_file: PathBuf,
    /// This node's weight as an origin (its share of homes relative to the others).
    pub weight: f64,
    /// The nodes that may be home to streams of an app not listed in `app_origins` (node ids; empty: every
    /// node of the mesh, this one included).
    pub origins: Vec<String>,
    /// Per app, the nodes that may be home to its streams (`[mesh.app_origins] shop = ["jkt-1", "mnl-1"]`).
    pub app_origins: BTreeMap<String, Vec<String>>,
    /// Milliseconds an edge keeps pulling a stream after its last viewer left (a viewer back within it
    /// starts at once).
    pub pull_grace_ms: u64,
    /// Milliseconds before asking a home again after it answered that it does not have a stream.
    pub retry_ms: u64,
    /// The most streams this node keeps mesh state for (peers' requests beyond it are refused, counted).
    pub max_streams: usize,
    /// Milliseconds from capture a frame published here may take to reach the last hop's viewers: each link
    /// drops a frame that cannot arrive in time (disposable frames first, audio and headers last), and the
    /// far side resumes at a keyframe. A frame keeps its capture time and budget across every hop.
    pub frame_budget_ms: u64,
    /// Milliseconds without a word from a peer before its link is declared down and its streams fail over
    /// (the link sends a keepalive every quarter of it).
    pub link_timeout_ms: u64,
    /// The other nodes.
    pub peers: Vec<PeerConfig>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            id: String::new(),
            listen: "0.0.0.0:4433".to_string(),
            key_file: PathBuf::from("/var/lib/popline/mesh.key"),
            weight: 1.0,
            origins: Vec::new(),
            app_origins: BTreeMap::new(),
            pull_grace_ms: 10_000,
            retry_ms: 1_000,
            max_streams: 65_536,
            frame_budget_ms: 1_000,
            link_timeout_ms: 800,
            peers: Vec::new(),
        }
    }
}

/// Another node of the mesh.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its id.
    pub id: String,
    /// Its mesh UDP address (`host:port`).
    pub addr: String,
    /// Its public key (base64), as its `popline keygen` printed it. Only listed keys are accepted.
    pub public_key: String,
    /// Its weight as an origin.
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

/// A peer, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// Its id.
    pub id: String,
    /// Its address, resolved.
    pub addr: SocketAddr,
    /// Its public key.
    pub public_key: [u8; KEY_LEN],
}

/// What the mesh runs with.
#[derive(Debug, Clone)]
pub struct MeshSetup {
    /// The mesh's UDP address.
    pub listen: SocketAddr,
    /// This node's identity.
    pub keypair: StaticKeypair,
    /// The peers.
    pub peers: Vec<Peer>,
    /// The mesh core's parameters.
    pub params: MeshParams,
    /// The end-to-end budget a frame published here starts with ([`MeshConfig::frame_budget_ms`]).
    pub frame_budget: Duration,
    /// How long a silent link lives ([`MeshConfig::link_timeout_ms`]).
    pub link_timeout: Duration,
}

/// A mistake in `[mesh]`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MeshConfigError {
    /// Something is wrong with one field.
    #[error("mesh.{field}: {why}")]
    Field {
        /// The field's path under `[mesh]`.
        field: String,
        /// What is wrong.
        why: String,
    },
}

fn field(field: impl Into<String>, why: impl Into<String>) -> MeshConfigError {
    MeshConfigError::Field {
        field: field.into(),
        why: why.into(),
    }
}

/// Decodes a base64 X25519 key.
pub fn decode_key(text: &str) -> Result<[u8; KEY_LEN], String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not base64 ({e})"))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| format!("{} bytes, an X25519 key has {KEY_LEN}", bytes.len()))
}

/// A key's base64 form.
pub fn encode_key(key: &[u8; KEY_LEN]) -> String {
    STANDARD.encode(key)
}

/// Writes a new private key to `path` (mode 0600, refusing to overwrite) and returns the keypair.
pub fn write_new_key(path: &Path) -> std::io::Result<StaticKeypair> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let keypair = StaticKeypair::generate().map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{}", encode_key(&keypair.private))?;
    Ok(keypair)
}

/// Reads the private key at `path`.
pub fn read_key(path: &Path) -> Result<StaticKeypair, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let private = decode_key(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    StaticKeypair::from_private(private).map_err(|e| format!("{}: {e}", path.display()))
}

fn resolve_addr(text: &str) -> Result<SocketAddr, String> {
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} is not host:port ({e})"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

fn check_weight(name: &str, w: f64) -> Result<(), MeshConfigError> {
    if w.is_finite() && w > 0.0 {
        Ok(())
    } else {
        Err(field(name, format!("{w} is not a positive weight")))
    }
}

impl MeshConfig {
    /// Whether the mesh is on.
    pub fn enabled(&self) -> bool {
        !self.id.is_empty()
    }

    /// Checks everything and loads the key: `None` when the mesh is off.
    pub fn resolve(&self) -> Result<Option<MeshSetup>, MeshConfigError> {
        if !self.enabled() {
            return Ok(None);
        }
        let listen = resolve_addr(&self.listen).map_err(|e| field("listen", e))?;
        check_weight("weight", self.weight)?;
        let keypair = read_key(&self.key_file).map_err(|e| field("key_file", e))?;
        let mut ids: HashSet<&str> = HashSet::from([self.id.as_str()]);
        let mut keys: HashSet<[u8; KEY_LEN]> = HashSet::from([keypair.public]);
        let mut peers = Vec::with_capacity(self.peers.len());
        let mut weights: HashMap<&str, f64> = HashMap::from([(self.id.as_str(), self.weight)]);
        for (i, p) in self.peers.iter().enumerate() {
            let at = |f: &str| format!("peers[{i}].{f}");
            if p.id.is_empty() {
                return Err(field(at("id"), "empty"));
            }
            if !ids.insert(&p.id) {
                return Err(field(
                    at("id"),
                    format!("{:?} is listed twice (or is this node's id)", p.id),
                ));
            }
            let public_key = decode_key(&p.public_key).map_err(|e| field(at("public_key"), e))?;
            if !keys.insert(public_key) {
                return Err(field(at("public_key"), "the same key as another node"));
            }
            check_weight(&at("weight"), p.weight)?;
            weights.insert(&p.id, p.weight);
            peers.push(Peer {
                id: p.id.clone(),
                addr: resolve_addr(&p.addr).map_err(|e| field(at("addr"), e))?,
                public_key,
            });
        }
        let origins = |name: &str, list: &[String]| -> Result<Vec<Origin>, MeshConfigError> {
            list.iter()
                .map(|id| {
                    weights
                        .get(id.as_str())
                        .map(|&w| Origin::weighted(id.clone(), w))
                        .ok_or_else(|| field(name, format!("{id:?} is not this node or a listed peer")))
                })
                .collect()
        };
        let default_origins = if self.origins.is_empty() {
            let mut all: Vec<Origin> = weights.iter().map(|(id, &w)| Origin::weighted(*id, w)).collect();
            all.sort_by(|a, b| a.id.cmp(&b.id));
            all
        } else {
            origins("origins", &self.origins)?
        };
        let mut per_app = HashMap::new();
        for (app, list) in &self.app_origins {
            if list.is_empty() {
                return Err(field(
                    format!("app_origins.{app}"),
                    "empty: list at least one node",
                ));
            }
            per_app.insert(app.clone(), origins(&format!("app_origins.{app}"), list)?);
        }
        Ok(Some(MeshSetup {
            frame_budget: Duration::from_millis(self.frame_budget_ms.max(1)),
            link_timeout: Duration::from_millis(self.link_timeout_ms.max(100)),
            listen,
            keypair,
            peers,
            params: MeshParams {
                me: self.id.clone(),
                origins: per_app,
                default_origins,
                pull_grace: Duration::from_millis(self.pull_grace_ms),
                retry_after: Duration::from_millis(self.retry_ms.max(1)),
                max_streams: self.max_streams.max(1),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(dir: &Path, name: &str) -> (PathBuf, StaticKeypair) {
        let path = dir.join(name);
        let kp = write_new_key(&path).unwrap();
        (path, kp)
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("popline-mesh-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_key_file_round_trips_and_is_private() {
        let dir = tmpdir("key");
        let (path, kp) = key_file(&dir, "a.key");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_key(&path).unwrap().public, kp.public);
        assert!(
            write_new_key(&path).is_err(),
            "an existing key is never overwritten"
        );
        assert_eq!(decode_key(&encode_key(&kp.public)).unwrap(), kp.public);
        assert!(decode_key("not base64!").is_err());
        assert!(decode_key(&STANDARD.encode([1u8; 31]))
            .unwrap_err()
            .contains("31 bytes"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_mesh_section_resolves_and_every_mistake_names_its_field() {
        let dir = tmpdir("resolve");
        let (path, _) = key_file(&dir, "me.key");
        let peer = StaticKeypair::generate().unwrap();
        let text = format!(
            r#"
            id = "jkt-1"
            listen = "127.0.0.1:4433"
            key_file = "{}"
            origins = ["jkt-1", "sgp-1"]
            [app_origins]
            shop = ["sgp-1"]
            [[peers]]
            id = "sgp-1"
            addr = "127.0.0.1:4434"
            public_key = "{}"
            weight = 2.0
            "#,
            path.display(),
            encode_key(&peer.public)
        );
        let cfg: MeshConfig = toml::from_str(&text).unwrap();
        let setup = cfg.resolve().unwrap().unwrap();
        assert_eq!(setup.peers[0].public_key, peer.public);
        assert_eq!(setup.params.default_origins.len(), 2);
        assert_eq!(setup.params.origins["shop"], vec![Origin::weighted("sgp-1", 2.0)]);
        assert!(
            MeshConfig::default().resolve().unwrap().is_none(),
            "off by default"
        );

        let broken = |edit: &dyn Fn(&mut MeshConfig)| {
            let mut c = cfg.clone();
            edit(&mut c);
            c.resolve().unwrap_err().to_string()
        };
        assert!(broken(&|c| c.peers[0].id = "jkt-1".into()).starts_with("mesh.peers[0].id"));
        assert!(broken(&|c| c.peers[0].public_key = "xx".into()).starts_with("mesh.peers[0].public_key"));
        assert!(broken(&|c| c.peers[0].addr = "nowhere".into()).starts_with("mesh.peers[0].addr"));
        assert!(broken(&|c| c.peers[0].weight = -1.0).starts_with("mesh.peers[0].weight"));
        assert!(broken(&|c| c.origins = vec!["lax-9".into()]).contains("\"lax-9\" is not this node"));
        assert!(broken(&|c| c.key_file = dir.join("missing.key")).starts_with("mesh.key_file: cannot read"));
        assert!(broken(&|c| c.listen = "1.2.3.4:99999".into()).starts_with("mesh.listen"));
        assert!(broken(&|c| {
            c.app_origins.insert("x".into(), vec![]);
        })
        .starts_with("mesh.app_origins.x"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
