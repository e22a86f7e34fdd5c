//! Hashing as blocking work: the `hash` action hands the CPU-bound part to
//! `run-blocking`, which runs `sha256` in a fresh instance on the host's
//! bounded blocking pool while the action waits for the result.

use module_sdk::prelude::*;
use sha2::{Digest, Sha256};

module_sdk::module! {
    actions: {
        "hash" => hash: "SHA-256 of {text}, repeated {rounds} times (default 1)",
    },
    blocking: {
        "sha256" => sha256: "SHA-256 of {text}, repeated {rounds} times",
    },
}

#[derive(Deserialize, Serialize)]
struct Input {
    text: String,
    #[serde(default = "one")]
    rounds: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize, Serialize)]
struct Digested {
    sha256: String,
    rounds: u32,
}

fn sha256(input: Input) -> Result<Digested> {
    if input.rounds == 0 || input.rounds > 1_000_000 {
        return Err(Error::invalid_input("rounds must be 1..=1000000"));
    }
    let mut digest = Sha256::digest(input.text.as_bytes());
    for _ in 1..input.rounds {
        digest = Sha256::digest(digest);
    }
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Digested { sha256: hex, rounds: input.rounds })
}

fn hash(input: Input) -> Result<ActionResult> {
    let out: Digested = tasks::run_blocking("sha256", &input)?;
    ActionResult::data(&out)
}
