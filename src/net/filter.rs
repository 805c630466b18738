//! Which layers a net state includes (Caffe's `FilterNet` and `StateMeetsRule`).

use anyhow::{bail, Result};

use crate::proto::caffe::{NetParameter, NetState, NetStateRule};

/// Whether `state` meets `rule`: phase, level bounds, required stages and excluded stages.
pub fn state_meets_rule(state: &NetState, rule: &NetStateRule) -> bool {
    if rule.phase.is_some() && rule.phase() != state.phase() {
        return false;
    }
    if rule.min_level.is_some() && state.level() < rule.min_level() {
        return false;
    }
    if rule.max_level.is_some() && state.level() > rule.max_level() {
        return false;
    }
    if !rule.stage.iter().all(|s| state.stage.contains(s)) {
        return false;
    }
    if rule.not_stage.iter().any(|s| state.stage.contains(s)) {
        return false;
    }
    true
}

/// The net with only the layers `state` includes. A layer may have include rules or exclude
/// rules, not both.
pub fn filter_net(net: &NetParameter, state: &NetState) -> Result<NetParameter> {
    let mut out = net.clone();
    out.layer.clear();
    for l in &net.layer {
        if !l.include.is_empty() && !l.exclude.is_empty() {
            bail!(
                "layer '{}' has both include and exclude rules; specify one or the other",
                l.name()
            );
        }
        let keep = if l.include.is_empty() {
            !l.exclude.iter().any(|r| state_meets_rule(state, r))
        } else {
            l.include.iter().any(|r| state_meets_rule(state, r))
        };
        if keep {
            out.layer.push(l.clone());
        }
    }
    Ok(out)
}

/// The state of a net: `base` (e.g. {phase: TRAIN}) merged with the net's own `state` and then
/// with `extra` (the solver's train_state/test_state), as Caffe's `MergeFrom` does.
pub fn merge_state(
    base: NetState,
    net_state: Option<&NetState>,
    extra: Option<&NetState>,
) -> NetState {
    let mut s = base;
    for m in [net_state, extra].into_iter().flatten() {
        if m.phase.is_some() {
            s.phase = m.phase;
        }
        if m.level.is_some() {
            s.level = m.level;
        }
        s.stage.extend(m.stage.iter().cloned());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::caffe::Phase;

    #[test]
    fn rules_follow_caffe() {
        let st = NetState {
            phase: Some(Phase::Train as i32),
            level: Some(2),
            stage: vec!["a".into()],
        };
        let r = |f: fn(&mut NetStateRule)| {
            let mut r = NetStateRule::default();
            f(&mut r);
            state_meets_rule(&st, &r)
        };
        assert!(r(|r| r.phase = Some(Phase::Train as i32)));
        assert!(!r(|r| r.phase = Some(Phase::Test as i32)));
        assert!(r(|r| r.min_level = Some(2)));
        assert!(!r(|r| r.min_level = Some(3)));
        assert!(!r(|r| r.max_level = Some(1)));
        assert!(r(|r| r.stage = vec!["a".into()]));
        assert!(!r(|r| r.stage = vec!["a".into(), "b".into()]));
        assert!(!r(|r| r.not_stage = vec!["a".into()]));
    }
}
