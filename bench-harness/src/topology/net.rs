//! The topology's network: one namespace per node and, per link, a TUN device in each of its two nodes'
//! namespaces (the link's point-to-point subnet, see [`super::spec`]) whose packets this process forwards
//! through the userspace emulator ([`crate::emulate::Emulator`], one per link, with the link's profile).
//!
//! [`Net`] deletes its namespaces when dropped, after stopping the emulators; a process killed by a signal
//! cannot, and the next [`Net::create`] removes namespaces left by processes that no longer run.

use super::spec::Spec;
use crate::compare::load_profile;
use crate::emulate::{ip, move_tun_into, open_tun, remove_stale_namespaces, Emulator, Profile};
use anyhow::{Context, Result};
use std::sync::atomic::{AtomicU32, Ordering};

/// Every namespace this module creates is named `popline-topo-PID-N-ID`.
const NS_PREFIX: &str = "popline-topo-";
/// Prefix length of a link's subnet.
const PREFIX_LEN: u8 = 30;

/// Topologies created by this process, for unique names.
static NETS: AtomicU32 = AtomicU32::new(0);

/// The namespaces and the links' emulators.
pub struct Net {
    /// `(node id, namespace)`, in the spec's node order.
    pub namespaces: Vec<(String, String)>,
    /// Each link's profile, in the spec's link order.
    pub profiles: Vec<Profile>,
    /// One per link; stopped before the namespaces go.
    emulators: Vec<Emulator>,
    /// Namespaces created so far, deleted on drop.
    created: Vec<String>,
}

impl Net {
    /// Creates a namespace per node and a link per [`Spec::links`] entry, addressed and up, each forwarded by
    /// its own emulator with its profile (link `k`'s seeds are the profile's seed + 2k and + 2k + 1, so that
    /// two links with one profile do not lose the same packets).
    pub fn create(spec: &Spec) -> Result<Net> {
        let profiles = spec
            .links
            .iter()
            .map(|l| load_profile(&l.profile).with_context(|| format!("link {}-{}", l.a, l.b)))
            .collect::<Result<Vec<_>>>()?;
        remove_stale_namespaces(NS_PREFIX);
        let pid = std::process::id();
        let n = NETS.fetch_add(1, Ordering::Relaxed);
        let mut net = Net {
            namespaces: Vec::new(),
            profiles: Vec::new(),
            emulators: Vec::new(),
            created: Vec::new(),
        };
        for id in &spec.nodes {
            let ns = format!("{NS_PREFIX}{pid}-{n}-{id}");
            ip(&["netns", "add", &ns])?;
            net.created.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "dev", "lo", "up"])?;
            net.namespaces.push((id.clone(), ns));
        }
        for (k, (link, profile)) in spec.links.iter().zip(&profiles).enumerate() {
            let mut ends = Vec::new();
            for (side, id) in [("a", &link.a), ("b", &link.b)] {
                // At most 15 bytes: `pt` + pid (<= 7 digits) + n's last digit + `x` + k (<= 3 digits) + side.
                let dev = open_tun(&format!("pt{pid}{}x{k}{side}", n % 10))?;
                let (local, _) = spec
                    .addresses(k, id)
                    .with_context(|| format!("node {id} is not on link {k}"))?;
                net.configure(id, &dev, &format!("{local}/{PREFIX_LEN}"), profile.mtu)
                    .with_context(|| format!("link {}-{}", link.a, link.b))?;
                ends.push(dev);
            }
            let (Some(b), Some(a)) = (ends.pop(), ends.pop()) else {
                continue;
            };
            let mut profile = profile.clone();
            profile.seed = profile.seed.wrapping_add(2 * k as u64);
            net.emulators.push(Emulator::for_profile(a, b, &profile)?);
        }
        net.profiles = profiles;
        Ok(net)
    }

    /// The namespace of node `id`.
    pub fn namespace(&self, id: &str) -> Option<&str> {
        self.namespaces
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, ns)| ns.as_str())
    }

    /// Moves TUN device `dev` into node `id`'s namespace, gives it `cidr` and `mtu`, and brings it up.
    fn configure(&self, id: &str, dev: &tun::Device, cidr: &str, mtu: u16) -> Result<()> {
        let ns = self
            .namespace(id)
            .with_context(|| format!("no namespace for node {id}"))?;
        move_tun_into(ns, dev, cidr, mtu)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for e in self.emulators.drain(..) {
            if let Err(e) = e.stop() {
                eprintln!("popline-bench topology: stopping a link's emulator: {e:#}");
            }
        }
        for ns in self.created.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("popline-bench topology: could not delete namespace {ns}: {e:#}");
            }
        }
    }
}
