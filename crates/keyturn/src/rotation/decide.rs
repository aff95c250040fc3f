//! The rotation protocol's decisions as pure functions of a secret's metadata: which step
//! may run, which stages move, which old versions to try. No I/O here; all unit-tested.

use super::store::{SecretMetadata, StageMove, VersionInfo, AWSCURRENT, AWSPENDING, AWSPREVIOUS};
use super::RotationError;

/// What a step should do once the token has been checked against the secret's versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The token's version is pending: run the step.
    Proceed,
    /// The token's version is already AWSCURRENT: the rotation is over, nothing to do
    /// (except tidying a leftover AWSPENDING label in finishSecret).
    AlreadyCurrent,
}

/// Checks the token against the secret's metadata, exactly as Secrets Manager's own
/// templates do at every step.
pub fn gate(meta: &SecretMetadata, token: &str) -> Result<Gate, RotationError> {
    if !meta.rotation_enabled {
        return Err(RotationError::RotationDisabled { secret: meta.arn.clone() });
    }
    let Some(stages) = meta.versions.get(token) else {
        return Err(RotationError::UnknownToken { secret: meta.arn.clone(), token: token.to_owned() });
    };
    if stages.contains(AWSCURRENT) {
        return Ok(Gate::AlreadyCurrent);
    }
    if !stages.contains(AWSPENDING) {
        return Err(RotationError::NotPending { secret: meta.arn.clone(), token: token.to_owned() });
    }
    Ok(Gate::Proceed)
}

/// The stage moves that finish a rotation: AWSCURRENT to the token's version (Secrets
/// Manager moves AWSPREVIOUS along), then AWSPENDING off it. Each move is only planned
/// while still needed, so a finishSecret rerun after a crash does what is left and no more.
pub fn finish_plan(meta: &SecretMetadata, token: &str) -> Vec<StageMove> {
    let mut plan = Vec::new();
    match meta.version_with(AWSCURRENT) {
        Some(current) if current == token => {}
        current => plan.push(StageMove {
            stage: AWSCURRENT,
            move_to: Some(token.to_owned()),
            remove_from: current.map(str::to_owned),
        }),
    }
    if meta.versions.get(token).is_some_and(|s| s.contains(AWSPENDING)) {
        plan.push(StageMove { stage: AWSPENDING, move_to: None, remove_from: Some(token.to_owned()) });
    }
    plan
}

/// Versions worth trying when neither pending, current nor previous logs in: every other
/// version the store still has (an abandoned rotation leaves its value behind, without
/// labels), newest first.
pub fn self_heal_candidates(meta: &SecretMetadata, versions: &[VersionInfo]) -> Vec<String> {
    let tried: Vec<&str> =
        [AWSPENDING, AWSCURRENT, AWSPREVIOUS].iter().filter_map(|stage| meta.version_with(stage)).collect();
    let mut rest: Vec<&VersionInfo> = versions.iter().filter(|v| !tried.contains(&v.id.as_str())).collect();
    rest.sort_by(|a, b| b.created.unwrap_or(0.0).total_cmp(&a.created.unwrap_or(0.0)));
    rest.into_iter().map(|v| v.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn meta(enabled: bool, versions: &[(&str, &[&str])]) -> SecretMetadata {
        SecretMetadata {
            arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf".into(),
            name: "db".into(),
            rotation_enabled: enabled,
            versions: versions
                .iter()
                .map(|(id, stages)| (id.to_string(), stages.iter().map(|s| s.to_string()).collect()))
                .collect(),
            tags: Default::default(),
        }
    }

    #[test]
    fn gate_follows_the_protocol() {
        let m = meta(true, &[("v1", &[AWSCURRENT]), ("t", &[AWSPENDING])]);
        assert_eq!(gate(&m, "t").unwrap(), Gate::Proceed);
        assert_eq!(gate(&m, "v1").unwrap(), Gate::AlreadyCurrent);
        assert!(matches!(gate(&m, "zzz"), Err(RotationError::UnknownToken { .. })));
        let m = meta(true, &[("v1", &[AWSCURRENT]), ("t", &[AWSPREVIOUS])]);
        assert!(matches!(gate(&m, "t"), Err(RotationError::NotPending { .. })));
        let m = meta(false, &[("t", &[AWSPENDING])]);
        assert!(matches!(gate(&m, "t"), Err(RotationError::RotationDisabled { .. })));
    }

    #[test]
    fn finish_moves_current_then_clears_pending() {
        let m = meta(true, &[("v1", &[AWSCURRENT]), ("t", &[AWSPENDING])]);
        assert_eq!(
            finish_plan(&m, "t"),
            vec![
                StageMove { stage: AWSCURRENT, move_to: Some("t".into()), remove_from: Some("v1".into()) },
                StageMove { stage: AWSPENDING, move_to: None, remove_from: Some("t".into()) },
            ]
        );
    }

    #[test]
    fn finish_after_a_crash_does_only_what_is_left() {
        let m = meta(true, &[("v1", &[AWSPREVIOUS]), ("t", &[AWSCURRENT, AWSPENDING])]);
        assert_eq!(
            finish_plan(&m, "t"),
            vec![StageMove { stage: AWSPENDING, move_to: None, remove_from: Some("t".into()) }]
        );
        let m = meta(true, &[("v1", &[AWSPREVIOUS]), ("t", &[AWSCURRENT])]);
        assert!(finish_plan(&m, "t").is_empty());
    }

    #[test]
    fn self_heal_tries_unlabelled_versions_newest_first() {
        let m = meta(true, &[("cur", &[AWSCURRENT]), ("prev", &[AWSPREVIOUS]), ("t", &[AWSPENDING])]);
        let v = |id: &str, created: f64| VersionInfo { id: id.into(), stages: BTreeSet::new(), created: Some(created) };
        let listed = [v("cur", 5.0), v("old", 1.0), v("prev", 4.0), v("abandoned", 3.0), v("t", 6.0)];
        assert_eq!(self_heal_candidates(&m, &listed), vec!["abandoned".to_string(), "old".to_string()]);
    }
}
