//! Live terminal dashboards (docs/design.md "Dashboard"), bpftop-style: each screen is an app
//! state struct updated from cheap snapshots plus a pure `draw(frame, &app)`, so the layout
//! is tested on fixed states with ratatui's `TestBackend` and the real terminal is only
//! touched here.
pub mod record;
pub mod replay;

use std::{
    io::{self, Stdout},
    sync::Once,
    time::Duration,
};

use crossterm::{
    cursor,
    event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    execute,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{Terminal, backend::CrosstermBackend};

/// The terminal in raw mode on the alternate screen; restored on drop, and by a panic hook
/// before the panic message is printed.
pub struct Tui {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
}

impl Tui {
    pub fn enter() -> io::Result<Self> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                prev(info);
            }));
        });
        terminal::enable_raw_mode()?;
        let mut out = io::stdout();
        if let Err(e) = execute!(out, EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e);
        }
        let terminal = Terminal::new(CrosstermBackend::new(out)).inspect_err(|_| restore())?;
        Ok(Self { terminal })
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        restore();
    }
}

/// What a key press asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// `q`, Esc or Ctrl-C (raw mode turns Ctrl-C into a key, not SIGINT).
    Quit,
    /// `p`.
    Pause,
    Other,
}

pub fn classify(code: KeyCode, mods: KeyModifiers) -> Key {
    match code {
        KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => Key::Quit,
        KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => Key::Quit,
        KeyCode::Char('p') | KeyCode::Char('P') => Key::Pause,
        _ => Key::Other,
    }
}

/// Waits up to `timeout` for a key press (resizes and releases are skipped).
pub fn next_key(timeout: Duration) -> io::Result<Option<Key>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if !event::poll(left)? {
            return Ok(None);
        }
        if let Event::Key(k) = event::read()?
            && k.kind == KeyEventKind::Press
        {
            return Ok(Some(classify(k.code, k.modifiers)));
        }
        if left.is_zero() {
            return Ok(None);
        }
    }
}

#[cfg(test)]
pub(crate) fn buffer_text(buf: &ratatui::buffer::Buffer) -> String {
    let area = buf.area;
    let mut s = String::new();
    for y in 0..area.height {
        for x in 0..area.width {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(classify(KeyCode::Char('q'), KeyModifiers::NONE), Key::Quit);
        assert_eq!(
            classify(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Key::Quit
        );
        assert_eq!(classify(KeyCode::Char('c'), KeyModifiers::NONE), Key::Other);
        assert_eq!(classify(KeyCode::Char('p'), KeyModifiers::NONE), Key::Pause);
    }
}
