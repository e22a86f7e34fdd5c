//! Learning a subprocess grant, for `modhost serve --learn MODULE`: a
//! request the grant refuses for want of a program, an argument shape or a
//! variable widens it by what it needs, for the one organization the host
//! learns for. The argument lists a program was run with are generalized
//! as `modhost manifest suggest` writes them ([`generalize`]), so the grant
//! a module runs under while learning is the grant the suggestion prints.
//!
//! The widened grant is checked as a manifest's would be (program names,
//! resolution on the host's search path, the caps on programs, shapes and
//! variables), and its children are confined by it like any other's.
//! Nothing else is widened: a working directory outside the data
//! directory, a malformed request, or one over a cap is refused as ever.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::argv::MAX_TOKEN_BYTES;
use super::gate::{self, Request};
use super::grant::SubprocessGrant;
use crate::manifest::LoadEnv;

/// Bytes of argument lists one learned module keeps: each request may
/// carry a megabyte of arguments, and the lists are held for as long as
/// the host runs (the caps on programs and shapes bound their number).
pub const MAX_LEARNED_ARG_BYTES: usize = 256 * 1024;

/// What one learned module asked for beyond its manifest's grant, and the
/// grant that allows it.
#[derive(Debug)]
pub struct Learner {
    /// The manifest's grant, which learning only ever adds to.
    base: SubprocessGrant,
    /// Where programs are looked up, as at load.
    load: LoadEnv,
    state: Mutex<Learned>,
}

#[derive(Debug)]
struct Learned {
    /// Per program as requested, the argument lists it was run with
    /// beyond the manifest's shapes.
    lists: BTreeMap<String, BTreeSet<Vec<String>>>,
    env: BTreeSet<String>,
    /// Bytes of the arguments in `lists`.
    bytes: usize,
    grant: Arc<SubprocessGrant>,
}

impl Learner {
    pub fn new(base: SubprocessGrant, load: LoadEnv) -> Self {
        let grant = Arc::new(base.clone());
        Learner {
            base,
            load,
            state: Mutex::new(Learned {
                lists: BTreeMap::new(),
                env: BTreeSet::new(),
                bytes: 0,
                grant,
            }),
        }
    }

    /// The grant learned so far.
    pub fn grant(&self) -> Arc<SubprocessGrant> {
        self.lock().grant.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Learned> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The grant widened by what `request` needs beyond the one learned so
    /// far: `Ok(None)` when it needs nothing more, or when the widened grant
    /// would still refuse it (its refusal is not a grant's to change, and
    /// nothing is kept), `Err` with the reason when no manifest could grant
    /// it.
    pub fn widen(&self, request: &Request) -> Result<Option<Arc<SubprocessGrant>>, String> {
        let mut state = self.lock();
        let current = &state.grant;
        let program = request.program.as_str();
        let shape_missing = current
            .program(program)
            .is_none_or(|g| g.matches(&request.args).is_err());
        let env_missing: Vec<&str> = request
            .env
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| !current.env.iter().any(|g| g.as_str() == *name))
            .collect();
        if !shape_missing && env_missing.is_empty() {
            return Ok(None);
        }
        let mut lists = state.lists.clone();
        let mut bytes = state.bytes;
        if shape_missing {
            if let Some(i) = request.args.iter().position(|a| !plain_literal(a)) {
                return Err(format!(
                    "argument {} cannot be written as a literal in a manifest's argument shapes, so it is not learned",
                    i + 1
                ));
            }
            bytes += request.args.iter().map(String::len).sum::<usize>();
            if bytes > MAX_LEARNED_ARG_BYTES {
                return Err(format!(
                    "not learned: the argument lists learned so far hold {MAX_LEARNED_ARG_BYTES} bytes, the most a learned module keeps"
                ));
            }
            lists
                .entry(program.to_owned())
                .or_default()
                .insert(request.args.clone());
        }
        let mut env = state.env.clone();
        env.extend(env_missing.iter().map(|n| (*n).to_owned()));
        let shapes: BTreeMap<String, BTreeSet<Vec<String>>> = lists
            .iter()
            .map(|(program, seen)| (program.clone(), generalize(seen)))
            .collect();
        let grant = Arc::new(
            self.base
                .widened(&shapes, &env, &self.load)
                .map_err(|e| format!("not learned: {e}"))?,
        );
        if gate::check(&grant, request).is_err() {
            return Ok(None);
        }
        for warning in grant.warnings() {
            if !state.grant.warnings().contains(&warning) {
                tracing::warn!("learned grant: {warning}");
            }
        }
        *state = Learned {
            lists,
            env,
            bytes,
            grant: grant.clone(),
        };
        Ok(Some(grant))
    }
}

/// Whether the grammar reads `arg` back as the literal it is.
pub fn plain_literal(arg: &str) -> bool {
    !arg.is_empty()
        && arg.len() <= MAX_TOKEN_BYTES
        && !arg.contains(['{', '}', '…'])
        && !arg.starts_with('[')
}

/// The shapes of one program's argument lists: lists of one length merged
/// while they differ in one place only (see [`crate::learn`] for the rules).
pub fn generalize(seen: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let mut shapes: Vec<Vec<String>> = seen.iter().cloned().collect();
    // Merge pairs until no two shapes differ in exactly one mergeable place.
    'merged: loop {
        for i in 0..shapes.len() {
            for j in i + 1..shapes.len() {
                if let Some(merged) = merge(&shapes[i], &shapes[j]) {
                    shapes[i] = merged;
                    shapes.swap_remove(j);
                    continue 'merged;
                }
            }
        }
        break;
    }
    shapes.into_iter().collect()
}

/// `a` and `b` as one shape, when they have one length and differ in one
/// place whose values may both be a placeholder's.
fn merge(a: &[String], b: &[String]) -> Option<Vec<String>> {
    if a.len() != b.len() {
        return None;
    }
    let mut differ = a.iter().zip(b).enumerate().filter(|(_, (x, y))| x != y);
    let (at, (x, y)) = differ.next()?;
    if differ.next().is_some() {
        return None;
    }
    // One placeholder per shape: merging placeholders in two places would
    // grant the lists in between that nobody ran.
    let elsewhere = |s: &[String]| {
        s.iter()
            .enumerate()
            .any(|(i, t)| i != at && t.starts_with('{'))
    };
    if elsewhere(a) || elsewhere(b) {
        return None;
    }
    let token = placeholder(x, y)?;
    let mut merged = a.to_vec();
    merged[at] = token;
    Some(merged)
}

/// The placeholder covering two values (either may be one already).
fn placeholder(x: &str, y: &str) -> Option<String> {
    let kind = |v: &str| -> Option<&'static str> {
        match v {
            "{int}" => Some("{int}"),
            "{path}" => Some("{path}"),
            "{value}" => Some("{value}"),
            _ if v.starts_with('-') || v.is_empty() => None,
            _ if v.bytes().all(|b| b.is_ascii_digit()) => Some("{int}"),
            _ if relative_path(v) => Some("{path}"),
            _ => Some("{value}"),
        }
    };
    match (kind(x)?, kind(y)?) {
        (a, b) if a == b => Some(a.into()),
        _ => Some("{value}".into()),
    }
}

/// Whether `v` reads as a relative path inside the working directory: a
/// file name with an extension or a path with `/`, no `..`, no blanks.
fn relative_path(v: &str) -> bool {
    !v.starts_with('/')
        && !v.contains(char::is_whitespace)
        && !v.split('/').any(|c| c == "..")
        && (v.contains('/') || v.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subprocess::gate;

    fn request(program: &str, args: &[&str], env: &[&str]) -> Request {
        Request {
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: env
                .iter()
                .map(|n| ((*n).to_owned(), "v".to_owned()))
                .collect(),
            ..Request::default()
        }
    }

    fn learner() -> Learner {
        Learner::new(SubprocessGrant::default(), LoadEnv::host_default())
    }

    #[test]
    fn a_refused_request_widens_the_grant_by_exactly_what_it_needs() {
        let l = learner();
        let first = request("true", &["-q", "one"], &["LANG"]);
        assert!(gate::check(&l.grant(), &first).is_err());
        let grant = l.widen(&first).unwrap().expect("it needed a grant");
        assert!(gate::check(&grant, &first).is_ok());
        assert!(l.widen(&first).unwrap().is_none(), "nothing more to learn");
        let other = request("true", &["-q", "one", "two"], &[]);
        assert!(
            gate::check(&grant, &other).is_err(),
            "another list is not granted"
        );
        let no_env = request("true", &["-q", "one"], &["HOME"]);
        assert!(
            gate::check(&grant, &no_env).is_err(),
            "nor another variable"
        );
    }

    #[test]
    fn lists_learned_in_one_place_are_generalized_as_the_suggestion_writes_them() {
        let l = learner();
        l.widen(&request("true", &["-m", "first"], &[])).unwrap();
        let grant = l
            .widen(&request("true", &["-m", "second"], &[]))
            .unwrap()
            .unwrap();
        let third = request("true", &["-m", "third"], &[]);
        assert!(gate::check(&grant, &third).is_ok());
        assert!(l.widen(&third).unwrap().is_none());
        assert_eq!(grant.program("true").unwrap().shapes.len(), 1);
    }

    #[test]
    fn what_no_manifest_could_grant_is_not_learned() {
        let l = learner();
        let braces = l.widen(&request("true", &["{value}"], &[])).unwrap_err();
        assert!(braces.contains("argument 1"), "{braces}");
        let relative = l.widen(&request("./run", &[], &[])).unwrap_err();
        assert!(relative.contains("not a relative path"), "{relative}");
        let missing = l
            .widen(&request("no-such-program-anywhere", &[], &[]))
            .unwrap_err();
        assert!(missing.contains("no-such-program-anywhere"), "{missing}");
        assert!(
            l.grant().is_empty(),
            "a refused widening leaves the grant as it was"
        );
    }

    #[test]
    fn a_request_the_widened_grant_would_still_refuse_leaves_it_as_it_was() {
        let l = learner();
        let mut outside = request("true", &["x"], &["LANG"]);
        outside.cwd = Some("../elsewhere".into());
        assert!(l.widen(&outside).unwrap().is_none());
        assert!(l.grant().is_empty() && l.grant().env.is_empty());
        // Lists that differ in two places stay apart, each a shape.
        let big = "x".repeat(MAX_TOKEN_BYTES);
        for i in 0.. {
            let n = i.to_string();
            let args = [&big, &big, &big, &big, &big, &big, &n, &n];
            let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
            match l.widen(&request("true", &args, &[])) {
                Ok(_) => assert!(i < 1000, "the bytes are capped"),
                Err(why) => {
                    assert!(why.contains("bytes"), "{why}");
                    break;
                }
            }
        }
    }

    #[test]
    fn the_manifest_grant_stays_and_is_only_added_to() {
        let base = crate::manifest::parse(
            "name = \"t\"\nversion = \"0.1.0\"\ncomponent = \"t.wasm\"\n\
             [subprocess]\nenv = [\"LANG\"]\n\
             [[subprocess.programs]]\nprogram = \"true\"\nargs = [[\"{int}\"]]\n",
            &LoadEnv::host_default(),
        )
        .unwrap()
        .policy
        .subprocess;
        let l = Learner::new(base, LoadEnv::host_default());
        let grant = l.widen(&request("true", &["x"], &["TZ"])).unwrap().unwrap();
        for ok in [
            request("true", &["7"], &["LANG"]),
            request("true", &["x"], &["TZ"]),
        ] {
            assert!(gate::check(&grant, &ok).is_ok(), "{ok:?}");
        }
    }
}
