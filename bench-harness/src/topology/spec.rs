//! What a topology is made of, parsed from the command line: the nodes (`a`, `b`, `c`, ...), the links
//! between them with each link's impairment profile, and each app's origins. Pure parsing: nothing here
//! touches the system.
//!
//! Link `k` (in the order [`Spec::links`] lists them) is the point-to-point subnet `169.254.(100+k).0/30`: its
//! first node (the smaller id) holds `.1`, the second `.2`.

use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;

/// Most nodes: one letter each.
pub const MAX_NODES: usize = 26;
/// Most links: the third byte of a link's subnet is `100 + k`, at most 254.
pub const MAX_LINKS: usize = 155;

/// One link between two nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// The first node (the smaller id): the profile's `a` side (`a2b` keys shape what it sends).
    pub a: String,
    /// The second node: the profile's `b` side.
    pub b: String,
    /// The impairment profile: a file or a name in `netem-scripts/profiles/`.
    pub profile: String,
}

/// A whole topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Node ids, `a`, `b`, ... in order.
    pub nodes: Vec<String>,
    /// The links; link `k` is subnet `169.254.(100+k).0/30`.
    pub links: Vec<LinkSpec>,
    /// `[mesh.app_origins]`: per app, the nodes that may be home to its streams.
    pub app_origins: Vec<(String, Vec<String>)>,
}

impl Spec {
    /// `nodes` nodes; `links` as `x-y=PROFILE` (every pair, with `default_profile`, when empty; or only the
    /// listed pairs with `--only-listed`); `origins` as `APP=x,y`.
    pub fn parse(
        nodes: usize,
        links: &[String],
        default_profile: &str,
        only_listed: bool,
        origins: &[String],
    ) -> Result<Spec> {
        if !(2..=MAX_NODES).contains(&nodes) {
            bail!("--nodes must be 2 to {MAX_NODES}, not {nodes}");
        }
        let ids: Vec<String> = (b'a'..).take(nodes).map(|c| char::from(c).to_string()).collect();
        let known = |id: &str| -> Result<String> {
            if ids.iter().any(|i| i == id) {
                Ok(id.to_string())
            } else {
                bail!("no node {id:?} (the nodes are {})", ids.join(","))
            }
        };
        let mut listed: Vec<LinkSpec> = Vec::new();
        for l in links {
            let (pair, profile) = l
                .split_once('=')
                .with_context(|| format!("--link {l:?}: expected x-y=PROFILE"))?;
            let (x, y) = pair
                .split_once('-')
                .with_context(|| format!("--link {l:?}: expected x-y=PROFILE"))?;
            let (x, y) = (known(x.trim())?, known(y.trim())?);
            if x == y {
                bail!("--link {l:?}: a link joins two different nodes");
            }
            let (a, b) = if x < y { (x, y) } else { (y, x) };
            if listed.iter().any(|s| s.a == a && s.b == b) {
                bail!("--link {a}-{b} given twice");
            }
            if profile.trim().is_empty() {
                bail!("--link {l:?}: no profile");
            }
            listed.push(LinkSpec {
                a,
                b,
                profile: profile.trim().to_string(),
            });
        }
        let mut all = Vec::new();
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                match listed.iter().find(|s| &s.a == a && &s.b == b) {
                    Some(s) => all.push(s.clone()),
                    None if !only_listed => all.push(LinkSpec {
                        a: a.clone(),
                        b: b.clone(),
                        profile: default_profile.to_string(),
                    }),
                    None => {}
                }
            }
        }
        if all.is_empty() {
            bail!("no links: give --link x-y=PROFILE");
        }
        if all.len() > MAX_LINKS {
            bail!("{} links: at most {MAX_LINKS}", all.len());
        }
        let mut app_origins: Vec<(String, Vec<String>)> = Vec::new();
        for o in origins {
            let (app, list) = o
                .split_once('=')
                .with_context(|| format!("--origins {o:?}: expected APP=x,y"))?;
            let app = app.trim();
            if app.is_empty()
                || !app
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                bail!("--origins {o:?}: the app name must be letters, digits, `_` or `-`");
            }
            if app_origins.iter().any(|(a, _)| a == app) {
                bail!("--origins {app}=... given twice");
            }
            let list = list
                .split(',')
                .map(|id| known(id.trim()))
                .collect::<Result<Vec<_>>>()?;
            app_origins.push((app.to_string(), list));
        }
        Ok(Spec {
            nodes: ids,
            links: all,
            app_origins,
        })
    }

    /// Node `id`'s address on link `k`, and its peer's (the other end).
    pub fn addresses(&self, k: usize, id: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
        let link = self.links.get(k)?;
        let third = u8::try_from(100 + k).ok()?;
        let (first, second) = (
            Ipv4Addr::new(169, 254, third, 1),
            Ipv4Addr::new(169, 254, third, 2),
        );
        if link.a == id {
            Some((first, second))
        } else if link.b == id {
            Some((second, first))
        } else {
            None
        }
    }

    /// Node `id`'s neighbours: `(peer id, link index)` for each link it is on.
    pub fn neighbours(&self, id: &str) -> Vec<(String, usize)> {
        self.links
            .iter()
            .enumerate()
            .filter_map(|(k, l)| {
                if l.a == id {
                    Some((l.b.clone(), k))
                } else if l.b == id {
                    Some((l.a.clone(), k))
                } else {
                    None
                }
            })
            .collect()
    }

    /// `a-b=PROFILE,...`: the links in one line.
    pub fn links_line(&self) -> String {
        self.links
            .iter()
            .map(|l| format!("{}-{}={}", l.a, l.b, l.profile))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_mesh_takes_the_default_profile_where_no_link_is_listed() {
        let s = Spec::parse(
            3,
            &["c-a=lossy-1pct".into()],
            "clean",
            false,
            &["live=b,c".into()],
        )
        .unwrap();
        assert_eq!(s.nodes, ["a", "b", "c"]);
        assert_eq!(s.links_line(), "a-b=clean,a-c=lossy-1pct,b-c=clean");
        assert_eq!(
            s.app_origins,
            [("live".to_string(), vec!["b".to_string(), "c".to_string()])]
        );
        assert_eq!(
            s.addresses(1, "c"),
            Some(("169.254.101.2".parse().unwrap(), "169.254.101.1".parse().unwrap()))
        );
        assert_eq!(s.addresses(1, "b"), None);
        assert_eq!(s.neighbours("a"), [("b".to_string(), 0), ("c".to_string(), 1)]);
    }

    #[test]
    fn only_listed_links_make_a_chain() {
        let s = Spec::parse(
            3,
            &["a-b=clean".into(), "b-c=lossy-1pct".into()],
            "clean",
            true,
            &[],
        )
        .unwrap();
        assert_eq!(s.links_line(), "a-b=clean,b-c=lossy-1pct");
        assert_eq!(s.neighbours("b").len(), 2);
        assert_eq!(s.neighbours("c"), [("b".to_string(), 1)]);
    }

    #[test]
    fn mistakes_are_named() {
        for (nodes, links, origins, why) in [
            (1, vec![], vec![], "--nodes"),
            (3, vec!["a-d=clean"], vec![], "no node \"d\""),
            (3, vec!["a-a=clean"], vec![], "two different"),
            (3, vec!["a-b=clean", "b-a=clean"], vec![], "twice"),
            (3, vec!["ab=clean"], vec![], "x-y=PROFILE"),
            (3, vec![], vec!["live=b,z"], "no node \"z\""),
            (3, vec![], vec!["li ve=b"], "app name"),
        ] {
            let links: Vec<String> = links.into_iter().map(String::from).collect();
            let origins: Vec<String> = origins.into_iter().map(String::from).collect();
            let err = Spec::parse(nodes, &links, "clean", false, &origins).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{err:#} lacks {why}");
        }
        assert!(
            Spec::parse(3, &[], "clean", true, &[]).is_err(),
            "no links at all"
        );
    }
}
