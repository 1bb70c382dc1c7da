//! The book's generated pages: the configuration reference, from `config.example.toml`
//! (whose values a test holds to the defaults table, [`crate::config::defaults`]) and the
//! CLI's flags and environment variables; and the CLI reference, from `--help` of every
//! command. `callhook`'s tests compare the committed pages (`docs/src/config-reference.md`,
//! `docs/src/cli-reference.md`) with what these functions make and fail when they differ;
//! `CALLHOOK_BLESS=1 cargo test --lib docs::` writes them.

use std::fmt::Write as _;

use clap::CommandFactory as _;

use crate::cli::Cli;
use crate::config::defaults;

/// The configuration file every key of which is documented, with its default.
pub const EXAMPLE: &str = include_str!("../config.example.toml");

/// Where the generated pages live, relative to the repository.
pub const CONFIG_REFERENCE_PAGE: &str = "docs/src/config-reference.md";
pub const CLI_REFERENCE_PAGE: &str = "docs/src/cli-reference.md";

const WIDTH: usize = 100;

fn generated_notice(what: &str) -> String {
    format!(
        "<!-- Generated from {what}; do not edit. Regenerate with\n     \
         CALLHOOK_BLESS=1 cargo test --lib docs:: -->\n"
    )
}

/// `callhook` and every subcommand (depth first, in `--help` order), hidden ones left
/// out, with their binary names set as `--help` shows them.
fn commands() -> Vec<clap::Command> {
    let mut root = Cli::command().term_width(WIDTH).max_term_width(WIDTH);
    root.build();
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(cmd) = stack.pop() {
        let mut subs: Vec<clap::Command> = cmd
            .get_subcommands()
            // clap's generated `help` subcommand only repeats the others' help.
            .filter(|c| !c.is_hide_set() && c.get_name() != "help")
            .cloned()
            .collect();
        subs.reverse();
        out.push(cmd);
        stack.extend(subs);
    }
    out
}

fn display_name(cmd: &clap::Command) -> String {
    cmd.get_bin_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned()
}

/// The long help of a command as `callhook … --help` prints it, but with environment
/// variables named without their current values (so the page does not depend on the
/// environment it was made in) and the width fixed.
fn long_help(cmd: &clap::Command) -> String {
    let mut cmd = cmd
        .clone()
        .term_width(WIDTH)
        .max_term_width(WIDTH)
        .mut_args(|a| a.hide_env_values(true));
    let text = cmd.render_long_help().to_string();
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_owned()
}

/// The CLI reference: `--help` of `callhook` and of every subcommand.
pub fn cli_reference() -> String {
    let all = commands();
    let mut out = String::new();
    out.push_str("# CLI reference\n\n");
    out.push_str(&generated_notice(
        "`callhook --help` of every command (src/cli.rs)",
    ));
    out.push_str(
        "\nWhat `callhook <command> --help` prints, for every command. \
         [Commands](commands.md) says what each is for. A flag's environment variable is \
         read when the flag is not given; the configuration file comes after both \
         ([Configuration](configuration.md)).\n\n",
    );
    for cmd in &all {
        let _ = writeln!(
            out,
            "- [`{}`](#{})",
            display_name(cmd),
            anchor(&display_name(cmd))
        );
    }
    for cmd in &all {
        let _ = write!(
            out,
            "\n## `{}`\n\n```text\n{}\n```\n",
            display_name(cmd),
            long_help(cmd)
        );
    }
    out
}

/// The heading id mdBook and GitHub give a heading of this text (in code).
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// A key of the example file: its section, name, the value the example gives it (the
/// default), whether it is commented out, and the comment above it.
struct Key {
    section: String,
    name: String,
    value: String,
    commented: bool,
    comment: Vec<String>,
}

/// The example file's sections of single settings (not `[[apps]]`, `[[forward]]`), each
/// key with the comment lines right above it. A key shown commented out (`# pool_size =
/// 4`) counts as a key of its own.
fn example_keys() -> Vec<Key> {
    let mut keys = Vec::new();
    let mut section = String::new();
    let mut comment: Vec<String> = Vec::new();
    for line in EXAMPLE.lines() {
        let line = line.trim();
        if line.starts_with("[[") {
            break;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            comment.clear();
            continue;
        }
        if line.is_empty() {
            comment.clear();
            continue;
        }
        let (text, commented) = match line.strip_prefix('#') {
            Some(c) => (c.trim(), true),
            None => (line, false),
        };
        match setting(text) {
            Some((name, value)) if !commented || known_commented_key(&section, name) => {
                keys.push(Key {
                    section: section.clone(),
                    name: name.to_owned(),
                    value: value.to_owned(),
                    commented,
                    comment: std::mem::take(&mut comment),
                });
            }
            _ if commented => comment.push(text.to_owned()),
            _ => {}
        }
    }
    keys
}

/// `name = value`, for a bare TOML key.
fn setting(text: &str) -> Option<(&str, &str)> {
    let (name, value) = text.split_once(" = ")?;
    let name = name.trim();
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .then_some((name, value.trim()))
}

/// The keys the example shows commented out because their default is derived.
fn known_commented_key(section: &str, name: &str) -> bool {
    section == "database" && name == "pool_size"
}

/// The flag a key's comment names (`flag --listen`), checked against the CLI, and that
/// flag's environment variable as the CLI reads it (which must be the one the comment
/// names, if it names one).
fn flag_and_env(comment: &str, cli: &[clap::Command]) -> (Option<String>, Option<String>) {
    let word_after = |marker: &str| {
        comment.find(marker).map(|i| {
            comment[i + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect::<String>()
        })
    };
    let flag = word_after("flag --").or_else(|| word_after("(flag --"));
    let env = word_after("env CALLHOOK_").map(|e| format!("CALLHOOK_{e}"));
    if let Some(flag) = &flag {
        let arg = cli
            .iter()
            .flat_map(|c| c.get_arguments())
            .find(|a| a.get_long() == Some(flag.as_str()));
        let Some(arg) = arg else {
            panic!("config.example.toml names --{flag}, which no command has");
        };
        let arg_env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        if env.is_some() && arg_env != env {
            panic!("config.example.toml says --{flag} reads {env:?}; the CLI says {arg_env:?}");
        }
        return (Some(format!("--{flag}")), arg_env);
    }
    (None, env)
}

/// The defaults table as the configuration file's tree of keys.
fn defaults_tree() -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(crate::config::file::FileConfig::default()) {
        Ok(serde_json::Value::Object(map)) => map,
        other => panic!("the defaults are not a table: {other:?}"),
    }
}

/// The built-in default of a key, from the defaults table, spelled as in TOML (strings,
/// numbers, booleans and empty arrays are spelled the same in JSON).
fn default_of(section: &str, name: &str) -> Option<String> {
    let defaults = defaults_tree();
    let table = if section.is_empty() {
        &defaults
    } else {
        defaults.get(section)?.as_object()?
    };
    table.get(name).map(|v| v.to_string())
}

/// The configuration reference: every key of `config.example.toml`, its default (from the
/// defaults table), its flag and environment variable, and what the example says of it;
/// then the per-app and per-destination tables as the example shows them, and every
/// environment variable the CLI reads.
pub fn config_reference() -> String {
    let cli = commands();
    let mut out = String::new();
    out.push_str("# Configuration reference\n\n");
    out.push_str(&generated_notice(
        "config.example.toml, the defaults table (src/config/defaults.rs) and the CLI",
    ));
    out.push_str(
        "\nEvery key of the configuration file, its built-in default, the flag and \
         environment variable that set it (they win over the file: flag > environment > \
         file > default), and what it does. [`config.example.toml`](../../config.example.toml) \
         holds the same, ready to copy. [Configuration](configuration.md) explains apps, \
         tokens and secrets.\n",
    );
    let mut section = None;
    for key in example_keys() {
        if section.as_deref() != Some(key.section.as_str()) {
            let title = if key.section.is_empty() {
                "Top level".to_owned()
            } else {
                format!("`[{}]`", key.section)
            };
            let _ = write!(out, "\n## {title}\n");
            section = Some(key.section.clone());
        }
        let dotted = if key.section.is_empty() {
            key.name.clone()
        } else {
            format!("{}.{}", key.section, key.name)
        };
        let comment = key.comment.join(" ");
        let (flag, env) = flag_and_env(&comment, &cli);
        let default = match default_of(&key.section, &key.name) {
            Some(d) => format!("`{d}`"),
            None if key.commented && dotted == "database.pool_size" => {
                format!("writers + {}", defaults::POOL_SPARE)
            }
            None => format!("none (example: `{}`)", key.value),
        };
        let _ = write!(out, "\n### `{dotted}`\n\n- default: {default}\n");
        match (flag, env) {
            (Some(f), Some(e)) => {
                let _ = writeln!(out, "- flag: `{f}`, environment: `{e}`");
            }
            (Some(f), None) => {
                let _ = writeln!(out, "- flag: `{f}`");
            }
            (None, Some(e)) => {
                let _ = writeln!(out, "- environment: `{e}`");
            }
            (None, None) => {}
        }
        let _ = write!(out, "\n{}\n", escape(&comment));
    }
    for table in ["apps", "forward"] {
        let _ = write!(
            out,
            "\n## `[[{table}]]`\n\n{}\n\n```toml\n{}\n```\n",
            match table {
                "apps" => {
                    "The apps this receiver accepts, one table each, as `config.example.toml` \
                     shows them (the lines commented out are optional keys, with their \
                     defaults or an example value). See [Configuration](configuration.md) and \
                     [TRTC's callbacks](trtc.md)."
                }
                _ => {
                    "Forwarding destinations, one table each; none by default. The values \
                     shown are the defaults of the optional keys. See [Forwarding to your \
                     services](forwarding.md)."
                }
            },
            array_table_text(table).trim_end()
        );
        out.push_str(&array_table_keys(table));
    }
    out.push_str(&environment_variables(&cli));
    out
}

/// The keys of one `[[apps]]` or `[[forward]]` table, read from the structs the file is
/// parsed into (a minimal table, read and written back, names every field), each with its
/// default as the code has it. The example above describes each of them (a test checks
/// that it names every one).
fn table_keys(table: &str) -> Vec<(String, String)> {
    let minimal = match table {
        "apps" => toml::from_str::<crate::config::file::FileApp>("sdkappid = 1")
            .map(|a| serde_json::to_value(a).ok()),
        _ => toml::from_str::<crate::config::forward::FileForward>(
            "name = \"x\"\nurl = \"http://127.0.0.1/\"",
        )
        .map(|f| serde_json::to_value(f).ok()),
    };
    let Ok(Some(serde_json::Value::Object(fields))) = minimal else {
        panic!("a minimal [[{table}]] does not parse");
    };
    fields
        .into_iter()
        .map(|(key, value)| {
            let default = match (table, key.as_str()) {
                ("apps", "sdkappid") | ("forward", "name" | "url") => "required".to_owned(),
                ("apps", "admin_identifier") => format!("`\"{}\"`", defaults::ADMIN_IDENTIFIER),
                ("apps", "api_region") => {
                    format!("`\"{}\"` (unless `api_url` is set)", defaults::API_REGION)
                }
                ("apps", "commands") => "every command".to_owned(),
                ("forward", "secret" | "secret_env") => {
                    "none (one of the two is required)".to_owned()
                }
                ("forward", "sdkappids" | "families" | "commands" | "results") => {
                    "every event".to_owned()
                }
                _ if value.is_null() => "none".to_owned(),
                _ => format!("`{value}`"),
            };
            (key, default)
        })
        .collect()
}

/// [`table_keys`] as a markdown table, with the variable that overrides a secret.
fn array_table_keys(table: &str) -> String {
    let mut out = format!("\n| `[[{table}]]` key | default | environment |\n|---|---|---|\n");
    for (key, default) in table_keys(table) {
        let env = match (table, key.as_str()) {
            ("apps", "sdkappid") => {
                "`--sdkappid` and `CALLHOOK_SDKAPPIDS` add apps without options"
            }
            ("apps", "token") => "`CALLHOOK_TOKEN_<SDKAPPID>` (wins over the file)",
            ("apps", "trtc_key") => "`CALLHOOK_TRTC_KEY_<SDKAPPID>` (wins over the file)",
            ("apps", "secret_key") => "`CALLHOOK_SECRET_KEY_<SDKAPPID>` (wins over the file)",
            (_, k) if k.ends_with("_env") => "the variable it names",
            _ => "",
        };
        let _ = writeln!(out, "| `{key}` | {default} | {env} |");
    }
    out
}

/// The example file's text from the comment block before the first `[[table]]` (or
/// `# [[table]]`) to the next blank-line-separated block of another table.
fn array_table_text(table: &str) -> String {
    let header = format!("[[{table}]]");
    let mut blocks: Vec<&str> = EXAMPLE.split("\n\n").collect();
    blocks.retain(|b| {
        b.lines()
            .any(|l| l.trim_start_matches("# ").trim() == header.as_str())
    });
    blocks.join("\n\n")
}

/// Every environment variable a command reads for a flag, with the flag and commands,
/// and those read outside the flags.
fn environment_variables(cli: &[clap::Command]) -> String {
    let mut rows: Vec<(String, String, Vec<String>)> = Vec::new();
    for cmd in cli {
        for arg in cmd.get_arguments() {
            let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let env = env.to_string_lossy().into_owned();
            let name = if arg.is_global_set() {
                "every command".to_owned()
            } else {
                format!("`{}`", display_name(cmd))
            };
            match rows.iter_mut().find(|(e, f, _)| *e == env && f == long) {
                Some((_, _, cmds)) => {
                    if !cmds.contains(&name) {
                        cmds.push(name);
                    }
                }
                None => rows.push((env, long.to_owned(), vec![name])),
            }
        }
    }
    rows.sort();
    let mut out = String::from(
        "\n## Environment variables\n\nRead for a flag that is not given (the CLI \
         reference has each flag's help):\n\n| variable | flag | commands |\n|---|---|---|\n",
    );
    for (env, flag, cmds) in rows {
        let _ = writeln!(out, "| `{env}` | `--{flag}` | {} |", cmds.join(", "));
    }
    let _ = write!(
        out,
        "\nRead by `serve` besides the flags:\n\n\
         | variable | what |\n|---|---|\n\
         | `RUST_LOG` | what is logged; default `{}` |\n\
         | `CALLHOOK_TOKEN_<SDKAPPID>` | the app's token; overrides `token` and `token_env` |\n\
         | `CALLHOOK_TRTC_KEY_<SDKAPPID>` | the app's TRTC callback key; overrides `trtc_key` and `trtc_key_env` |\n\
         | `CALLHOOK_SECRET_KEY_<SDKAPPID>` | the app's secret key for Tencent's REST APIs (also read by `reconcile` and `register`); overrides `secret_key` and `secret_key_env` |\n\
         | the variables named by `token_env`, `trtc_key_env`, `secret_key_env` and `[[forward]] secret_env` | those secrets |\n",
        defaults::LOG_FILTER
    );
    out
}

/// Comment text as markdown: `<` and `>` escaped (the example uses `<callback_path>`).
fn escape(text: &str) -> String {
    text.replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A committed page is what the code makes now; `CALLHOOK_BLESS=1` writes it.
    fn check(page: &str, generated: &str) {
        let path = format!("{}/{page}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("CALLHOOK_BLESS").is_some() {
            if let Err(e) = std::fs::write(&path, generated) {
                panic!("{path}: {e}");
            }
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != generated {
            let line = committed
                .lines()
                .zip(generated.lines())
                .position(|(a, b)| a != b)
                .map_or_else(
                    || committed.lines().count().min(generated.lines().count()) + 1,
                    |i| i + 1,
                );
            panic!(
                "{page} is stale: it differs from what the code generates, from line {line}.\n\
                 Regenerate it with:  CALLHOOK_BLESS=1 cargo test --lib docs::"
            );
        }
    }

    #[test]
    fn the_config_reference_is_current() {
        check(CONFIG_REFERENCE_PAGE, &config_reference());
    }

    #[test]
    fn the_cli_reference_is_current() {
        check(CLI_REFERENCE_PAGE, &cli_reference());
    }

    /// Every key of the defaults table is in the reference (the example file states every
    /// default, which a test of the defaults holds it to).
    #[test]
    fn the_config_reference_has_every_key() {
        let reference = config_reference();
        let defaults = defaults_tree();
        assert!(!defaults.is_empty());
        for (section, value) in &defaults {
            if section == "apps" || section == "forward" {
                continue;
            }
            match value.as_object() {
                Some(table) => {
                    for name in table.keys() {
                        let key = format!("### `{section}.{name}`");
                        assert!(reference.contains(&key), "{key} is missing");
                    }
                }
                None => {
                    let key = format!("### `{section}`");
                    assert!(reference.contains(&key), "{key} is missing");
                }
            }
        }
        assert!(reference.contains("### `database.pool_size`"));
    }

    /// The example file shows every key of `[[apps]]` and `[[forward]]` (as a setting or
    /// a commented-out line), so the reference's example describes each.
    #[test]
    fn the_example_shows_every_table_key() {
        for table in ["apps", "forward"] {
            let text = array_table_text(table);
            for (key, _) in table_keys(table) {
                // `key = …` on a line of its own, commented out or not, or in the prose.
                let shown = text.lines().any(|l| {
                    let words: Vec<&str> = l
                        .split(|c: char| c.is_whitespace() || c == '`' || c == '#')
                        .filter(|w| !w.is_empty())
                        .collect();
                    words.windows(2).any(|w| w[0] == key && w[1] == "=")
                });
                assert!(
                    shown,
                    "config.example.toml's [[{table}]] does not show {key}"
                );
            }
        }
    }

    /// Every command is in the CLI reference, with its flags.
    #[test]
    fn the_cli_reference_has_every_command() {
        let reference = cli_reference();
        for cmd in commands() {
            let heading = format!("## `{}`", display_name(&cmd));
            assert!(reference.contains(&heading), "{heading} is missing");
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    assert!(
                        reference.contains(&format!("--{long}")),
                        "--{long} is missing"
                    );
                }
            }
        }
    }
}
