//! The session's shell: bash, zsh or fish started interactively with the user's own configuration,
//! then the environment activated, `(blast)` at the front of the prompt and a hook that runs before
//! each prompt (`blast __session-hook`), which shows what the finished command changed and exits the
//! shell once `blast kill` ended the session.
//!
//! Each shell gets a small startup file in the session directory: bash an `--rcfile` that sources
//! `~/.bashrc` first, zsh a `ZDOTDIR` whose files source the user's, fish an `--init-command` (run
//! after its configuration).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::session::{END_SHELL_STATUS, SESSION_ENV_VAR, SOCKET_VAR};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShellKind {
    Bash,
    Zsh,
    Fish,
}

impl ShellKind {
    pub fn name(self) -> &'static str {
        match self {
            ShellKind::Bash => "bash",
            ShellKind::Zsh => "zsh",
            ShellKind::Fish => "fish",
        }
    }
}

/// The shell to start: `requested` (a name or a path), else `$SHELL`, else bash.
pub fn choose(requested: Option<&str>) -> Result<(ShellKind, PathBuf)> {
    let from_env = std::env::var("SHELL").ok().filter(|s| !s.is_empty());
    let wanted = requested
        .map(str::to_owned)
        .or(from_env)
        .unwrap_or_else(|| "bash".into());
    let name = Path::new(&wanted)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let kind = match name {
        "bash" => ShellKind::Bash,
        "zsh" => ShellKind::Zsh,
        "fish" => ShellKind::Fish,
        other if requested.is_none() => {
            // An unknown login shell: bash is the one nearly every machine has.
            return choose(Some("bash")).map_err(|_| {
                Error::Invalid(format!(
                    "$SHELL is `{other}`, which blast cannot start a session in: pass --shell bash, zsh or fish"
                ))
            });
        }
        other => {
            return Err(Error::Invalid(format!(
                "blast starts sessions in bash, zsh or fish, not `{other}`: pass --shell bash, zsh or fish"
            )));
        }
    };
    let program = if wanted.contains('/') {
        Some(PathBuf::from(&wanted)).filter(|p| p.is_file())
    } else {
        crate::fsutil::find_executable(
            kind.name(),
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        )
    };
    let program = program.ok_or_else(|| {
        Error::Invalid(format!(
            "`{wanted}` is not installed here: install it or pass --shell with another of bash, zsh or fish"
        ))
    })?;
    Ok((kind, program))
}

/// Everything a session's shell needs to know.
pub struct ShellSetup<'a> {
    pub kind: ShellKind,
    pub program: &'a Path,
    pub env_root: &'a Path,
    /// Where the startup files go.
    pub session_dir: &'a Path,
    pub socket: &'a Path,
    /// This blast, by absolute path: the hook must work whatever the user's PATH becomes.
    pub blast: &'a Path,
}

/// The `PATH` of a session's shell: the caller's, without the `bin` of another virtual environment
/// active where `blast start` runs (found in review: the session's activation cannot take it off, and
/// its `pip` installed there, uncaptured).
pub(crate) fn session_path(env_root: &Path) -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let other = std::env::var_os("VIRTUAL_ENV")
        .map(PathBuf::from)
        .filter(|other| other.as_path() != env_root)
        .map(|other| other.join("bin"));
    let Some(other) = other else {
        return path;
    };
    std::env::join_paths(std::env::split_paths(&path).filter(|dir| *dir != other)).unwrap_or(path)
}

/// Writes the shell's startup files and returns the command that starts it.
pub fn command(setup: &ShellSetup<'_>) -> Result<Command> {
    let mut command = Command::new(setup.program);
    command
        .env("PATH", session_path(setup.env_root))
        .env_remove("VIRTUAL_ENV");
    let env_root = setup.env_root.to_string_lossy();
    let blast = quote(&setup.blast.to_string_lossy());
    let activate = quote(&format!("{env_root}/bin/activate"));
    let end = END_SHELL_STATUS;
    command
        .env_remove(crate::index::RECOVERY_VAR)
        .env(SOCKET_VAR, setup.socket)
        .env("BLAST_ENV", setup.env_root)
        // The user's configuration may set BLAST_ENV (a default environment): the hook's own.
        .env(SESSION_ENV_VAR, setup.env_root)
        // blast puts its own marker in the prompt.
        .env("VIRTUAL_ENV_DISABLE_PROMPT", "1")
        // A `pip` that is not the environment's (it has none) refuses to install into its own
        // interpreter, uncaptured.
        .env("PIP_REQUIRE_VIRTUALENV", "1");
    match setup.kind {
        ShellKind::Bash => {
            let rc = setup.session_dir.join("bashrc");
            write(
                &rc,
                &format!(
                    r#"[ -f ~/.bashrc ] && . ~/.bashrc
. {activate}
__blast_last() {{
    local entry
    entry=$(HISTTIMEFORMAT= history 1)
    read -r __blast_number __blast_command <<< "$entry"
}}
__blast_first=1
__blast_prompt() {{
    local status=$?
    __blast_last
    # The first prompt (bash reads its history file after this file: the entry is an old session's),
    # or no new history entry (a command left out of the history): no command to name.
    if [ -n "$__blast_first" ] || [ "$__blast_number" = "$__blast_seen" ]; then
        __blast_command=
    fi
    __blast_first=
    __blast_seen=$__blast_number
    {blast} __session-hook --command "$__blast_command" --status "$status"
    [ $? = {end} ] && exit
    return $status
}}
PROMPT_COMMAND="__blast_prompt${{PROMPT_COMMAND:+;$PROMPT_COMMAND}}"
PS1="(blast) $PS1"
"#
                ),
            )?;
            command.arg("--rcfile").arg(&rc).arg("-i");
        }
        ShellKind::Zsh => {
            let zdotdir = setup.session_dir.join("zsh");
            std::fs::create_dir_all(&zdotdir).at("creating", &zdotdir)?;
            let user = std::env::var("ZDOTDIR")
                .ok()
                .filter(|d| !d.is_empty())
                .or_else(|| std::env::var("HOME").ok())
                .unwrap_or_default();
            let user = quote(&user);
            for file in [".zshenv", ".zprofile", ".zlogin"] {
                write(
                    &zdotdir.join(file),
                    &format!("[ -f {user}/{file} ] && . {user}/{file}\n"),
                )?;
            }
            write(
                &zdotdir.join(".zshrc"),
                &format!(
                    r#"ZDOTDIR={user}
[ -f {user}/.zshrc ] && . {user}/.zshrc
. {activate}
__blast_first=1
__blast_prompt() {{
    local last_status=$?
    # At the first prompt, the last history entry is an old session's.
    local last_command
    [ -z "$__blast_first" ] && last_command=$(fc -ln -1 2>/dev/null)
    __blast_first=
    {blast} __session-hook --command "$last_command" --status "$last_status"
    [ $? = {end} ] && exit
}}
autoload -Uz add-zsh-hook
add-zsh-hook precmd __blast_prompt
PROMPT="(blast) $PROMPT"
"#
                ),
            )?;
            command.env("ZDOTDIR", &zdotdir).arg("-i");
        }
        ShellKind::Fish => {
            let init = setup.session_dir.join("init.fish");
            let activate = fish_quote(&format!("{env_root}/bin/activate.fish"));
            let blast = fish_quote(&setup.blast.to_string_lossy());
            write(
                &init,
                &format!(
                    r#"source {activate}
functions -q fish_prompt; and functions -c fish_prompt __blast_user_prompt
function fish_prompt
    echo -n '(blast) '
    functions -q __blast_user_prompt; and __blast_user_prompt
end
set -g __blast_first 1
function __blast_prompt --on-event fish_prompt
    set -l last_status $status
    # At the first prompt, the last history entry is an old session's.
    set -l last_command $history[1]
    if set -q __blast_first
        set last_command ''
        set -e __blast_first
    end
    {blast} __session-hook --command "$last_command" --status "$last_status"
    test $status = {end}; and exit
end
"#
                ),
            )?;
            command
                .arg("--interactive")
                .arg("--init-command")
                .arg(format!("source {}", fish_quote(&init.to_string_lossy())));
        }
    }
    Ok(command)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).at("writing", path)
}

/// `text` as one word of a command line for the user to copy: as it is where the shell reads it so,
/// else single-quoted (a path with a space).
pub fn word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./+,:@%-=".contains(c);
    match !text.is_empty() && text.chars().all(plain) {
        true => text.to_owned(),
        false => quote(text),
    }
}

/// Single-quoted for sh and zsh (a `'` closes, is escaped, and reopens).
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Single-quoted for fish, where `\\` and `\'` are escapes even between single quotes.
fn fish_quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', r"\\").replace('\'', r"\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `shell -c 'printf %s QUOTED'` prints: the text itself, for any bytes a path may hold.
    fn printed_by(shell: &str, quoted: &str) -> Option<String> {
        let out = Command::new(shell)
            .args(["-c", &format!("printf %s {quoted}")])
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn quoted_paths_reach_each_shell_unchanged() {
        let nasty = r#"/tmp/it's a \ path\\ with "quotes" $HOME `x` \'"#;
        assert_eq!(printed_by("bash", &quote(nasty)).as_deref(), Some(nasty));
        // fish is installed by scripts/setup; where it is not, there is nothing to quote for.
        if let Some(printed) = printed_by("fish", &fish_quote(nasty)) {
            assert_eq!(printed, nasty);
        }
    }
}
