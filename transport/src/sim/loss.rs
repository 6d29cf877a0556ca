//! Random loss: the [`LossModel`] a link is configured with and the [`LossProcess`] that applies it.

use super::rng::SimRng;

/// How a link loses packets at random, independently of its queue and its outages.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LossModel {
    /// No random loss.
    #[default]
    None,
    /// Each packet is lost independently with probability `p` (a fraction in `[0, 1]`).
    Bernoulli {
        /// Loss probability per packet, as a fraction.
        p: f64,
    },
    /// Gilbert-Elliott: per packet, good->bad with probability `p`, bad->good with `r`;
    /// loss probability `loss_good` in good state (usually 0) and `loss_bad` in bad (usually 1).
    ///
    /// The chain starts in the good state; for each packet it first moves, then decides the packet's fate in the
    /// state it is now in. With `loss_good = 0` and `loss_bad = 1` losses come in bursts of mean length `1 / r`.
    GilbertElliott {
        /// Probability per packet of moving from the good to the bad state.
        p: f64,
        /// Probability per packet of moving from the bad to the good state.
        r: f64,
        /// Loss probability in the good state.
        loss_good: f64,
        /// Loss probability in the bad state.
        loss_bad: f64,
    },
}

impl LossModel {
    /// The stationary loss rate, as a fraction.
    ///
    /// Gilbert-Elliott: `pi_bad = p / (p + r)` and `loss_good * (1 - pi_bad) + loss_bad * pi_bad`; a chain with
    /// `p + r == 0` never leaves the good state it starts in, so its rate is `loss_good`.
    pub fn mean_loss(&self) -> f64 {
        match *self {
            LossModel::None => 0.0,
            LossModel::Bernoulli { p } => clamp01(p),
            LossModel::GilbertElliott {
                p,
                r,
                loss_good,
                loss_bad,
            } => {
                let (p, r) = (clamp01(p), clamp01(r));
                let (lg, lb) = (clamp01(loss_good), clamp01(loss_bad));
                if p + r <= 0.0 {
                    return lg;
                }
                let pi_bad = p / (p + r);
                lg * (1.0 - pi_bad) + lb * pi_bad
            }
        }
    }

    /// Parses "0", "1%", "0.01", "GE:p,r" (p and r as fractions or percents, loss_good 0, loss_bad 1), "GE:p,r,lg,lb".
    ///
    /// A bare number is a fraction in `[0, 1]` ("5" is refused: write "5%"); "none" and a zero rate give
    /// [`LossModel::None`]. The `GE:` prefix is case-insensitive and spaces around values are ignored.
    pub fn parse(s: &str) -> Result<LossModel, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty loss model".to_string());
        }
        if s.eq_ignore_ascii_case("none") {
            return Ok(LossModel::None);
        }
        let ge = s
            .get(..3)
            .filter(|prefix| prefix.eq_ignore_ascii_case("ge:"))
            .and_then(|_| s.get(3..));
        if let Some(rest) = ge {
            let values = rest
                .split(',')
                .map(parse_fraction)
                .collect::<Result<Vec<f64>, String>>()
                .map_err(|e| format!("in Gilbert-Elliott model {s:?}: {e}"))?;
            return match values[..] {
                [p, r] => Ok(LossModel::GilbertElliott {
                    p,
                    r,
                    loss_good: 0.0,
                    loss_bad: 1.0,
                }),
                [p, r, loss_good, loss_bad] => Ok(LossModel::GilbertElliott {
                    p,
                    r,
                    loss_good,
                    loss_bad,
                }),
                _ => Err(format!(
                    "Gilbert-Elliott model {s:?} needs 2 values (GE:p,r) or 4 (GE:p,r,loss_good,loss_bad), got {}",
                    values.len()
                )),
            };
        }
        let p = parse_fraction(s)?;
        if p == 0.0 {
            Ok(LossModel::None)
        } else {
            Ok(LossModel::Bernoulli { p })
        }
    }
}

/// Parses "0.01" or "1%" into a fraction in `[0, 1]`.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, scale) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), 100.0),
        None => (t, 1.0),
    };
    let v: f64 = number
        .parse()
        .map_err(|_| format!("{t:?} is not a probability (expected e.g. 0.01 or 1%)"))?;
    let v = v / scale;
    if !v.is_finite() || !(0.0..=1.0).contains(&v) {
        return Err(if scale == 1.0 && v > 1.0 && v <= 100.0 {
            format!("{t:?} is above 1; a percentage needs a '%' sign (e.g. {t}%)")
        } else {
            format!("{t:?} is outside [0, 1] (or [0%, 100%])")
        });
    }
    Ok(v)
}

fn clamp01(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// A [`LossModel`] together with its state (the Gilbert-Elliott chain's good or bad state).
#[derive(Debug, Clone)]
pub struct LossProcess {
    model: LossModel,
    bad: bool,
}

impl LossProcess {
    /// Starts the process in the good state.
    pub fn new(model: LossModel) -> Self {
        LossProcess { model, bad: false }
    }

    /// Decides the fate of the next packet: `true` means drop it. Draws from `rng` only when the model is random.
    #[inline]
    pub fn drop_next(&mut self, rng: &mut SimRng) -> bool {
        match self.model {
            LossModel::None => false,
            LossModel::Bernoulli { p } => rng.chance(p),
            LossModel::GilbertElliott {
                p,
                r,
                loss_good,
                loss_bad,
            } => {
                if self.bad {
                    if rng.chance(r) {
                        self.bad = false;
                    }
                } else if rng.chance(p) {
                    self.bad = true;
                }
                rng.chance(if self.bad { loss_bad } else { loss_good })
            }
        }
    }

    /// Whether a Gilbert-Elliott chain is in its bad state (always `false` for the other models).
    pub fn is_bad(&self) -> bool {
        self.bad
    }

    /// The model this process applies.
    pub fn model(&self) -> &LossModel {
        &self.model
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bernoulli_one_percent() {
        let mut rng = SimRng::new(11);
        let mut process = LossProcess::new(LossModel::Bernoulli { p: 0.01 });
        let n = 100_000;
        let lost = (0..n).filter(|_| process.drop_next(&mut rng)).count();
        let rate = lost as f64 / n as f64;
        assert!((rate - 0.01).abs() <= 0.001, "loss rate {rate}");
    }

    #[test]
    fn none_never_drops() {
        let mut rng = SimRng::new(1);
        let mut process = LossProcess::new(LossModel::None);
        assert!((0..10_000).all(|_| !process.drop_next(&mut rng)));
        assert_eq!(LossModel::None.mean_loss(), 0.0);
    }

    #[test]
    fn gilbert_elliott_mean_and_bursts() {
        let (p, r) = (0.01, 0.25);
        let model = LossModel::GilbertElliott {
            p,
            r,
            loss_good: 0.0,
            loss_bad: 1.0,
        };
        let expected = p / (p + r);
        assert!((model.mean_loss() - expected).abs() < 1e-12);

        let mut rng = SimRng::new(5);
        let mut process = LossProcess::new(model);
        let n = 1_000_000;
        let (mut lost, mut bursts, mut in_burst) = (0u64, 0u64, false);
        for _ in 0..n {
            let drop = process.drop_next(&mut rng);
            if drop {
                lost += 1;
                if !in_burst {
                    bursts += 1;
                }
            }
            in_burst = drop;
        }
        let rate = lost as f64 / n as f64;
        assert!(
            (rate - expected).abs() / expected < 0.05,
            "rate {rate} vs {expected}"
        );
        let mean_burst = lost as f64 / bursts as f64;
        assert!(
            (mean_burst - 1.0 / r).abs() / (1.0 / r) < 0.05,
            "mean burst {mean_burst}"
        );
    }

    #[test]
    fn gilbert_elliott_partial_losses() {
        let model = LossModel::GilbertElliott {
            p: 0.1,
            r: 0.3,
            loss_good: 0.01,
            loss_bad: 0.5,
        };
        let expected = 0.01 * 0.75 + 0.5 * 0.25;
        assert!((model.mean_loss() - expected).abs() < 1e-12);
        let mut rng = SimRng::new(8);
        let mut process = LossProcess::new(model);
        let n = 200_000;
        let lost = (0..n).filter(|_| process.drop_next(&mut rng)).count();
        let rate = lost as f64 / n as f64;
        assert!(
            (rate - expected).abs() / expected < 0.05,
            "rate {rate} vs {expected}"
        );
        // A chain that can never move stays good.
        let stuck = LossModel::GilbertElliott {
            p: 0.0,
            r: 0.0,
            loss_good: 0.02,
            loss_bad: 1.0,
        };
        assert_eq!(stuck.mean_loss(), 0.02);
    }

    #[test]
    fn parse_accepts() {
        assert_eq!(LossModel::parse("0"), Ok(LossModel::None));
        assert_eq!(LossModel::parse("0%"), Ok(LossModel::None));
        assert_eq!(LossModel::parse(" none "), Ok(LossModel::None));
        assert_eq!(LossModel::parse("1%"), Ok(LossModel::Bernoulli { p: 0.01 }));
        assert_eq!(LossModel::parse("0.01"), Ok(LossModel::Bernoulli { p: 0.01 }));
        assert_eq!(LossModel::parse("1"), Ok(LossModel::Bernoulli { p: 1.0 }));
        assert_eq!(LossModel::parse("2.5 %"), Ok(LossModel::Bernoulli { p: 0.025 }));
        assert_eq!(
            LossModel::parse("GE:1%,25%"),
            Ok(LossModel::GilbertElliott {
                p: 0.01,
                r: 0.25,
                loss_good: 0.0,
                loss_bad: 1.0
            })
        );
        assert_eq!(
            LossModel::parse("ge: 0.01, 0.3, 0, 0.8"),
            Ok(LossModel::GilbertElliott {
                p: 0.01,
                r: 0.3,
                loss_good: 0.0,
                loss_bad: 0.8
            })
        );
    }

    #[test]
    fn parse_rejects() {
        for bad in [
            "",
            "  ",
            "abc",
            "5",
            "-0.1",
            "101%",
            "nan",
            "inf",
            "1%%",
            "GE:",
            "GE:0.1",
            "GE:0.1,0.2,0.3",
            "GE:0.1,x",
            "GE:0.1,0.2,0,2",
            "GE:0.1,0.2,0,1,0",
            "GX:0.1,0.2",
        ] {
            let result = LossModel::parse(bad);
            assert!(result.is_err(), "{bad:?} parsed as {result:?}");
        }
        let msg = LossModel::parse("5").unwrap_err();
        assert!(msg.contains('%'), "{msg}");
    }
}
