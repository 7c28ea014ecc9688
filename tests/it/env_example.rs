//! `.env.example` lists every setting with the code's default, and nothing else.

use std::collections::BTreeMap;
use std::path::Path;

use selfdeploy::config::{REGISTRY, Settings, Source};

fn example() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example");
    let bytes = std::fs::read(&path).expect(".env.example exists");
    selfdeploy::config::env_file::parse(&bytes)
        .expect(".env.example parses")
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect()
}

#[test]
fn every_setting_is_listed_with_its_default() {
    let listed = example();
    for spec in REGISTRY {
        let value = listed
            .get(spec.name)
            .unwrap_or_else(|| panic!("{} is missing from .env.example", spec.name));
        assert_eq!(
            value, spec.default,
            "{}: .env.example differs from the code",
            spec.name
        );
    }
    for name in listed.keys() {
        assert!(
            REGISTRY.iter().any(|s| s.name == name),
            ".env.example names {name}, which is not a setting"
        );
    }
}

#[test]
fn loading_the_example_gives_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example");
    let from_file = Settings::load(Some(&path)).unwrap();
    let defaults = Settings::with_overrides(&[]).unwrap();
    for (a, b) in from_file.resolved.iter().zip(&defaults.resolved) {
        // The test process may set none of these; the file must agree with the code.
        if a.source == Source::Environment {
            continue;
        }
        assert_eq!(a.value, b.value, "{}", a.name);
    }
}

#[test]
fn the_replication_guide_maps_every_setting() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations/REPLICATION.md");
    let guide = std::fs::read_to_string(path).unwrap();
    for spec in REGISTRY {
        let default = if spec.default.is_empty() {
            "(empty)"
        } else {
            spec.default
        };
        assert!(
            guide.contains(&format!("| `{}` | `{default}` |", spec.name)),
            "docs/operations/REPLICATION.md: the env map lacks {} with its default",
            spec.name
        );
    }
}
