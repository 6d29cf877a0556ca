//! [`Planner`]: which streams are transcoded now, decided from the live streams, the apps' ladders and the
//! API's requests, with `now` passed in (sans-IO: the supervisor runs the processes it asks for).
//!
//! Rules:
//! - a stream of an app with a ladder is transcoded while it is live, when the app says `transcode = true`
//!   (unless the API turned it off) or the API turned it on;
//! - a rendition (`STREAM_<name>` of a name in its app's ladder) is never a source;
//! - renditions taller than the source are skipped (no upscaling);
//! - at most `max_workers` run at once: the API is refused beyond that, an automatic start is refused and
//!   counted (and tried again when a slot frees);
//! - a worker that ends while its source is live is started again after a pause that doubles from
//!   `backoff_min` to `backoff_max` while it keeps failing (reset once it ran `stable_after`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::ladder::Rendition;
use crate::stream_key::StreamKey;

/// Streams the API may have turned on or off at once (the settings stay for later publishes of the stream).
pub const MAX_REQUESTS: usize = 100_000;

/// A live stream, as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The stream.
    pub key: StreamKey,
    /// Its picture height, when known (from its metadata).
    pub height: Option<u32>,
}

/// An app's ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppLadder {
    /// Its renditions.
    pub renditions: Vec<Rendition>,
    /// Transcode every live stream of the app (else only those the API asks for).
    pub auto: bool,
}

/// The planner's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSettings {
    /// Workers at once.
    pub max_workers: usize,
    /// The first pause before a restart.
    pub backoff_min: Duration,
    /// The longest pause.
    pub backoff_max: Duration,
    /// A worker that ran this long before it ended starts again after `backoff_min`.
    pub stable_after: Duration,
}

/// What the supervisor must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a worker for `key` making `renditions`.
    Start {
        /// The source.
        key: StreamKey,
        /// What it makes.
        renditions: Vec<Rendition>,
    },
    /// Stop `key`'s worker (its process if one runs) and forget it.
    Stop {
        /// The source.
        key: StreamKey,
        /// Why, for the log.
        why: &'static str,
    },
    /// `key` wants a worker and none is free (logged once per stream until it gets one).
    Refused {
        /// The source.
        key: StreamKey,
    },
}

/// A worker's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerState {
    /// A process runs now.
    pub running: bool,
    /// What it makes.
    pub renditions: Vec<Rendition>,
    /// When it last started.
    pub started_at: Instant,
    /// Times it was started again after it ended.
    pub restarts: u64,
    /// Ends in a row without a stable run.
    pub failures: u32,
    /// When it may start again (while not running).
    pub retry_at: Option<Instant>,
}

/// The planner.
#[derive(Debug)]
pub struct Planner {
    settings: PlanSettings,
    ladders: HashMap<String, AppLadder>,
    /// The ladder of every app without its own (`[fanout] renditions`).
    default_ladder: Option<AppLadder>,
    /// Turned on by the API.
    on: HashSet<StreamKey>,
    /// Turned off by the API (beats `auto`).
    off: HashSet<StreamKey>,
    workers: BTreeMap<StreamKey, WorkerState>,
    /// Streams refused for want of a worker, not yet started.
    refused: HashSet<StreamKey>,
    /// Automatic starts refused for want of a worker.
    pub refusals: u64,
}

impl Planner {
    /// A planner over `ladders` (by app; `default_ladder` for the other apps).
    pub fn new(
        settings: PlanSettings,
        ladders: HashMap<String, AppLadder>,
        default_ladder: Option<AppLadder>,
    ) -> Planner {
        Planner {
            settings,
            ladders,
            default_ladder,
            on: HashSet::new(),
            off: HashSet::new(),
            workers: BTreeMap::new(),
            refused: HashSet::new(),
            refusals: 0,
        }
    }

    /// The workers (running or waiting to start again).
    pub fn workers(&self) -> impl Iterator<Item = (&StreamKey, &WorkerState)> {
        self.workers.iter()
    }

    /// Whether `key` is a rendition of a stream of its app's ladder (`STREAM_720p`).
    pub fn is_rendition(&self, key: &StreamKey) -> bool {
        self.ladder(key.app()).is_some_and(|ladder| {
            ladder.renditions.iter().any(|r| {
                key.stream()
                    .strip_suffix(&r.name)
                    .is_some_and(|rest| rest.len() > 1 && rest.ends_with('_'))
            })
        })
    }

    /// The API turns transcoding of `key` on or off. Refused (with why) when its app has no ladder, when
    /// `key` is a rendition, or (on) when every worker is taken by other streams.
    pub fn request(&mut self, key: &StreamKey, on: bool) -> Result<(), String> {
        if self.ladder(key.app()).is_none() {
            return Err(format!(
                "app {} has no renditions: set [apps.{}] renditions = [\"720p 2500k\", ...]",
                key.app(),
                key.app()
            ));
        }
        if self.is_rendition(key) {
            return Err(format!("{key} is a rendition; transcode its source"));
        }
        if self.on.len() + self.off.len() >= MAX_REQUESTS && !self.on.contains(key) && !self.off.contains(key)
        {
            return Err(format!(
                "{MAX_REQUESTS} streams already have a transcode setting from the API; turn some back (DELETE)"
            ));
        }
        if on {
            let running = self.workers.len();
            if !self.workers.contains_key(key) && running >= self.settings.max_workers {
                return Err(format!(
                    "this node runs {running} transcodes, its most (transcode.max_workers = {}); stop one first",
                    self.settings.max_workers
                ));
            }
            self.off.remove(key);
            self.on.insert(key.clone());
        } else {
            self.on.remove(key);
            self.off.insert(key.clone());
        }
        Ok(())
    }

    /// `app`'s ladder, if it has renditions.
    fn ladder(&self, app: &str) -> Option<&AppLadder> {
        match self.ladders.get(app) {
            Some(own) => Some(own),
            None => self.default_ladder.as_ref(),
        }
        .filter(|ladder| !ladder.renditions.is_empty())
    }

    fn wanted(&self, key: &StreamKey) -> Option<&AppLadder> {
        let ladder = self.ladder(key.app())?;
        let asked = self.on.contains(key) || (ladder.auto && !self.off.contains(key));
        (asked && !self.is_rendition(key)).then_some(ladder)
    }

    /// What to do now, given the streams live on the node.
    pub fn step(&mut self, live: &[Source], now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        // Stop what is no longer wanted (the source ended or was forbidden, or the API said so).
        let unwanted: Vec<StreamKey> = self
            .workers
            .keys()
            .filter(|key| self.wanted(key).is_none() || !live.iter().any(|s| &s.key == *key))
            .cloned()
            .collect();
        for key in unwanted {
            // Also for a worker waiting out its restart pause: the supervisor forgets what it listed for it.
            if self.workers.remove(&key).is_some() {
                let why = if self.wanted(&key).is_none() {
                    "turned off"
                } else {
                    "the source ended"
                };
                actions.push(Action::Stop { key, why });
            }
        }
        self.refused.retain(|key| live.iter().any(|s| &s.key == key));
        for source in live {
            let Some(ladder) = self.wanted(&source.key) else {
                continue;
            };
            let renditions: Vec<Rendition> = ladder
                .renditions
                .iter()
                .filter(|r| source.height.is_none_or(|h| r.height <= h))
                .cloned()
                .collect();
            if renditions.is_empty() {
                continue;
            }
            match self.workers.get_mut(&source.key) {
                Some(worker) if worker.running => {}
                Some(worker) => {
                    if worker.retry_at.is_none_or(|at| now >= at) {
                        worker.running = true;
                        worker.started_at = now;
                        worker.retry_at = None;
                        worker.restarts += 1;
                        worker.renditions = renditions.clone();
                        actions.push(Action::Start {
                            key: source.key.clone(),
                            renditions,
                        });
                    }
                }
                None => {
                    if self.workers.len() >= self.settings.max_workers {
                        if self.refused.insert(source.key.clone()) {
                            self.refusals += 1;
                            actions.push(Action::Refused {
                                key: source.key.clone(),
                            });
                        }
                        continue;
                    }
                    self.refused.remove(&source.key);
                    self.workers.insert(
                        source.key.clone(),
                        WorkerState {
                            running: true,
                            renditions: renditions.clone(),
                            started_at: now,
                            restarts: 0,
                            failures: 0,
                            retry_at: None,
                        },
                    );
                    actions.push(Action::Start {
                        key: source.key.clone(),
                        renditions,
                    });
                }
            }
        }
        actions
    }

    /// `key`'s worker process ended at `now` (not by a [`Action::Stop`]): it starts again after a pause
    /// if still wanted. Returns the pause.
    pub fn exited(&mut self, key: &StreamKey, now: Instant) -> Option<Duration> {
        let settings = self.settings;
        let worker = self.workers.get_mut(key)?;
        worker.running = false;
        if now.saturating_duration_since(worker.started_at) >= settings.stable_after {
            worker.failures = 0;
        }
        let pause = settings
            .backoff_min
            .saturating_mul(1 << worker.failures.min(16))
            .min(settings.backoff_max);
        worker.failures = worker.failures.saturating_add(1);
        worker.retry_at = Some(now + pause);
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::ladder::parse_ladder;

    fn key(s: &str) -> StreamKey {
        StreamKey::new("live", s).unwrap()
    }

    fn source(s: &str, height: u32) -> Source {
        Source {
            key: key(s),
            height: Some(height),
        }
    }

    fn planner(auto: bool, max_workers: usize) -> Planner {
        let ladder = parse_ladder(&["720p 2500k".into(), "480p 1000k".into(), "360p 600k".into()]).unwrap();
        Planner::new(
            PlanSettings {
                max_workers,
                backoff_min: Duration::from_secs(1),
                backoff_max: Duration::from_secs(8),
                stable_after: Duration::from_secs(30),
            },
            HashMap::from([(
                "live".to_string(),
                AppLadder {
                    renditions: ladder,
                    auto,
                },
            )]),
            None,
        )
    }

    fn started(actions: &[Action]) -> Vec<(String, Vec<String>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Start { key, renditions } => Some((
                    key.stream().to_string(),
                    renditions.iter().map(|r| r.name.clone()).collect(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn live_sources_start_renditions_never_and_no_upscaling() {
        let mut p = planner(true, 4);
        let now = Instant::now();
        let live = [
            source("shop", 720),
            source("shop_720p", 720),
            source("small", 480),
            source("x_360p", 360),
        ];
        let actions = p.step(&live, now);
        assert_eq!(
            started(&actions),
            [
                (
                    "shop".to_string(),
                    vec!["720p".to_string(), "480p".into(), "360p".into()]
                ),
                ("small".to_string(), vec!["480p".to_string(), "360p".into()]),
            ]
        );
        assert!(p.is_rendition(&key("shop_720p")) && p.is_rendition(&key("x_360p")));
        assert!(!p.is_rendition(&key("_720p")) && !p.is_rendition(&key("shop720p")));
        // Nothing more while they run; the source's end stops its worker.
        assert!(p.step(&live, now).is_empty());
        let actions = p.step(&live[1..], now);
        assert_eq!(
            actions,
            [Action::Stop {
                key: key("shop"),
                why: "the source ended"
            }]
        );
    }

    #[test]
    fn the_api_turns_it_on_and_off_within_the_limit() {
        let mut p = planner(false, 1);
        let now = Instant::now();
        let live = [source("a", 720), source("b", 720)];
        assert!(p.step(&live, now).is_empty(), "not automatic");
        p.request(&key("a"), true).unwrap();
        assert_eq!(started(&p.step(&live, now)).len(), 1);
        let refused = p.request(&key("b"), true).unwrap_err();
        assert!(refused.contains("transcode.max_workers = 1"), "{refused}");
        assert!(p.request(&key("a_720p"), true).unwrap_err().contains("rendition"));
        assert!(p
            .request(&StreamKey::new("other", "a").unwrap(), true)
            .unwrap_err()
            .contains("no renditions"));
        p.request(&key("a"), false).unwrap();
        assert_eq!(
            p.step(&live, now),
            [Action::Stop {
                key: key("a"),
                why: "turned off"
            }]
        );
        p.request(&key("b"), true).unwrap();
        assert_eq!(started(&p.step(&live, now))[0].0, "b");
    }

    #[test]
    fn automatic_starts_beyond_the_limit_are_refused_once_and_retried() {
        let mut p = planner(true, 1);
        let now = Instant::now();
        let live = [source("a", 720), source("b", 720)];
        let actions = p.step(&live, now);
        assert_eq!(started(&actions).len(), 1);
        assert!(actions.contains(&Action::Refused { key: key("b") }));
        assert!(p.step(&live, now).is_empty(), "refused once");
        assert_eq!(p.refusals, 1);
        // a ends: b gets the worker.
        let actions = p.step(&live[1..], now);
        assert!(actions.contains(&Action::Stop {
            key: key("a"),
            why: "the source ended"
        }));
        assert_eq!(
            started(&actions),
            [(
                "b".to_string(),
                vec!["720p".to_string(), "480p".into(), "360p".into()]
            )]
        );
    }

    #[test]
    fn a_dead_worker_restarts_with_a_growing_pause() {
        let mut p = planner(true, 2);
        let t0 = Instant::now();
        let live = [source("a", 720)];
        p.step(&live, t0);
        let pauses: Vec<u64> = (0..5)
            .map(|i| {
                let at = t0 + Duration::from_secs(100 * i);
                let pause = p.exited(&key("a"), at).unwrap();
                assert!(p.step(&live, at).is_empty(), "not before the pause");
                assert_eq!(started(&p.step(&live, at + pause)).len(), 1);
                pause.as_secs()
            })
            .collect();
        // Each run but the first lasted under stable_after? No: 100 s apart, each ran long: reset each time.
        assert_eq!(pauses, [1, 1, 1, 1, 1]);
        let mut at = t0 + Duration::from_secs(1_000);
        let mut quick = Vec::new();
        for _ in 0..5 {
            let pause = p.exited(&key("a"), at).unwrap();
            quick.push(pause.as_secs());
            at += pause;
            p.step(&live, at);
        }
        assert_eq!(
            quick,
            [1, 2, 4, 8, 8],
            "doubling to backoff_max while it keeps failing"
        );
        assert_eq!(p.workers().next().unwrap().1.restarts, 10);
        // The source ends while its worker waits out a pause: the supervisor is told to forget it.
        p.exited(&key("a"), at);
        assert_eq!(
            p.step(&[], at),
            [Action::Stop {
                key: key("a"),
                why: "the source ended"
            }]
        );
        assert_eq!(p.workers().count(), 0);
    }
}
