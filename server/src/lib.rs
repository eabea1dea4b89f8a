//! Switchyard server: HTTP API and pages, storage, the engine and the composition root. See
//! ARCHITECTURE.md for the code map.
pub mod alerts;
pub mod application;
pub mod db;
pub mod detach;
pub mod egress;
pub mod engine;
pub mod entrypoints;
pub mod events;
pub mod health;
pub mod http;
pub mod metrics;
pub mod retention;
pub mod sandbox;
pub mod secrets;
pub mod sessions;
pub mod settings;
pub mod startup;
pub mod store;
pub mod supervisor;
pub mod triggers;

pub use settings::Settings;
pub use startup::Application;

/// The layering inside this crate (ARCHITECTURE.md "Invariants"): which modules a module may
/// not name. The crates' boundaries check the rest.
#[cfg(test)]
mod layers {
    use std::path::Path;

    /// Every `crate::<module>` a module's files name (comments left out).
    fn named_modules(dir: &Path) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let entries = std::fs::read_dir(dir).expect("module directory");
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(named_modules(&path));
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let code: String = text
                .lines()
                .map(|line| line.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            for (i, _) in code.match_indices("crate::") {
                for name in first_segments(&code[i + "crate::".len()..]) {
                    found.push((path.display().to_string(), name));
                }
            }
        }
        found
    }

    /// The first path segment after `crate::`: one name, or each item of a `{...}` group.
    fn first_segments(rest: &str) -> Vec<String> {
        let ident = |s: &str| -> String {
            s.trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let Some(group) = rest.strip_prefix('{') else {
            return vec![ident(rest)];
        };
        let (mut depth, mut items, mut start) = (0usize, Vec::new(), 0usize);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    items.push(ident(&group[start..i]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(ident(&group[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.into_iter().filter(|s| !s.is_empty()).collect()
    }

    fn assert_does_not_name(module: &str, forbidden: &[&str]) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let dir = root.join(module);
        let path = if dir.is_dir() {
            dir
        } else {
            root.join(format!("{module}.rs"))
        };
        let named = if path.is_dir() {
            named_modules(&path)
        } else {
            let parent = path.parent().expect("src");
            named_modules(parent)
                .into_iter()
                .filter(|(file, _)| file == &path.display().to_string())
                .collect()
        };
        for (file, name) in named {
            assert!(
                !forbidden.contains(&name.as_str()),
                "{file} names crate::{name}, which the {module} layer may not use"
            );
        }
    }

    #[test]
    fn http_reaches_storage_only_through_the_application_layer() {
        assert_does_not_name("http", &["store", "engine"]);
    }

    #[test]
    fn the_engine_knows_nothing_above_it() {
        assert_does_not_name("engine", &["application", "http", "triggers", "startup"]);
    }

    #[test]
    fn the_store_knows_nothing_above_it() {
        assert_does_not_name(
            "store",
            &[
                "application",
                "http",
                "engine",
                "events",
                "entrypoints",
                "startup",
            ],
        );
    }

    #[test]
    fn entry_points_know_nothing_above_them() {
        assert_does_not_name(
            "entrypoints",
            &["application", "http", "engine", "store", "startup"],
        );
    }

    #[test]
    fn the_application_layer_knows_no_http() {
        assert_does_not_name("application", &["http", "startup", "triggers"]);
    }
}
