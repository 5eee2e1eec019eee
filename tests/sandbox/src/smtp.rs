//! An SMTP sink: a small RFC 5321 server that accepts every message and
//! records it. No TLS, no AUTH. Advertises 8BITMIME, SMTPUTF8, PIPELINING
//! and SIZE. Pipelined commands work because each connection reads lines
//! from one buffered reader and answers them in order.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::mime;
use crate::model::ReceivedEmail;
use crate::state::lock;

/// Where accepted messages go.
pub(crate) type Mailbox = Arc<Mutex<Vec<ReceivedEmail>>>;

/// The name the server greets with.
const HOSTNAME: &str = "payhub-sandbox";
/// Longest command line accepted (RFC 5321 requires at least 512 octets).
const MAX_COMMAND_LINE: usize = 4096;
/// Largest message accepted (advertised as SIZE).
const MAX_MESSAGE: usize = 10 * 1024 * 1024;
/// Most recipients per message (RFC 5321 requires at least 100).
const MAX_RECIPIENTS: usize = 100;
/// A connection silent this long is closed (RFC 5321 suggests 5 minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Accepts connections until `shutdown`; each gets its own task.
pub(crate) async fn serve(listener: TcpListener, mailbox: Mailbox, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let mailbox = mailbox.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, peer, &mailbox, &shutdown).await {
                        tracing::debug!(%peer, error = %e, "smtp connection ended with an error");
                    }
                });
            }
            Err(e) => {
                // Usually out of file descriptors; back off instead of spinning.
                tracing::warn!(error = %e, "smtp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tracing::debug!("smtp sink stopped");
}

/// What the state machine wants done after a command.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Send this reply (may be several lines joined by CRLF).
    Reply(String),
    /// Send `354`, then read the message.
    Data,
    /// Send `221` and close.
    Quit,
}

/// One SMTP session's state.
#[derive(Debug, Default)]
struct Session {
    /// The client sent EHLO or HELO.
    greeted: bool,
    /// The reverse-path of the transaction in progress.
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

impl Session {
    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    /// Handles one command line (without its line ending).
    fn command(&mut self, line: &str) -> Action {
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v, a.trim()),
            None => (line, ""),
        };
        let reply = |s: &str| Action::Reply(s.to_string());
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if arg.is_empty() => reply("501 5.5.4 Syntax: EHLO hostname"),
            "EHLO" => {
                self.greeted = true;
                self.reset();
                Action::Reply(format!(
                    "250-{HOSTNAME} greets {arg}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-SIZE {MAX_MESSAGE}\r\n250 PIPELINING"
                ))
            }
            "HELO" => {
                self.greeted = true;
                self.reset();
                Action::Reply(format!("250 {HOSTNAME}"))
            }
            "MAIL" => self.mail(arg),
            "RCPT" => self.rcpt(arg),
            "DATA" if !arg.is_empty() => reply("501 5.5.4 Syntax: DATA"),
            "DATA" if self.mail_from.is_none() => reply("503 5.5.1 Error: need MAIL command"),
            "DATA" if self.rcpt_to.is_empty() => reply("554 5.5.1 Error: no valid recipients"),
            "DATA" => Action::Data,
            "RSET" => {
                self.reset();
                reply("250 2.0.0 Ok")
            }
            "NOOP" => reply("250 2.0.0 Ok"),
            "QUIT" => Action::Quit,
            "VRFY" => reply("252 2.0.0 Cannot VRFY user, but will accept message"),
            "HELP" => reply("214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP"),
            "STARTTLS" | "AUTH" | "EXPN" | "BDAT" | "ETRN" | "TURN" => {
                reply("502 5.5.1 Error: command not implemented")
            }
            _ => reply("500 5.5.2 Error: command not recognized"),
        }
    }

    /// `MAIL FROM:<path> [BODY=7BIT|8BITMIME] [SMTPUTF8] [SIZE=n]`.
    fn mail(&mut self, arg: &str) -> Action {
        let reply = |s: &str| Action::Reply(s.to_string());
        if !self.greeted {
            return reply("503 5.5.1 Error: send HELO/EHLO first");
        }
        if self.mail_from.is_some() {
            return reply("503 5.5.1 Error: nested MAIL command");
        }
        let Some((path, params)) = strip_keyword(arg, "FROM:").and_then(parse_path) else {
            return reply("501 5.5.4 Syntax: MAIL FROM:<address>");
        };
        for param in params.split_whitespace() {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key.to_ascii_uppercase().as_str() {
                "BODY" if value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME") => {}
                "SMTPUTF8" if value.is_empty() => {}
                "SIZE" => match value.parse::<usize>() {
                    Ok(n) if n > MAX_MESSAGE => {
                        return reply("552 5.3.4 Message size exceeds fixed maximum message size");
                    }
                    Ok(_) => {}
                    Err(_) => return reply("501 5.5.4 Bad SIZE parameter"),
                },
                _ => return reply("555 5.5.4 Unsupported MAIL parameter"),
            }
        }
        self.mail_from = Some(path.to_string());
        reply("250 2.1.0 Ok")
    }

    /// `RCPT TO:<path>`.
    fn rcpt(&mut self, arg: &str) -> Action {
        let reply = |s: &str| Action::Reply(s.to_string());
        if self.mail_from.is_none() {
            return reply("503 5.5.1 Error: need MAIL command");
        }
        let Some((path, params)) = strip_keyword(arg, "TO:").and_then(parse_path) else {
            return reply("501 5.5.4 Syntax: RCPT TO:<address>");
        };
        if path.is_empty() {
            return reply("501 5.1.3 Bad recipient address syntax");
        }
        if !params.trim().is_empty() {
            return reply("555 5.5.4 Unsupported RCPT parameter");
        }
        if self.rcpt_to.len() >= MAX_RECIPIENTS {
            return reply("452 4.5.3 Error: too many recipients");
        }
        self.rcpt_to.push(path.to_string());
        reply("250 2.1.5 Ok")
    }

    /// Ends the transaction with the received message.
    fn finish(&mut self, data: &[u8]) -> ReceivedEmail {
        let email = ReceivedEmail {
            mail_from: self.mail_from.take().unwrap_or_default(),
            rcpt_to: std::mem::take(&mut self.rcpt_to),
            data: String::from_utf8_lossy(data).into_owned(),
            subject: mime::subject(data),
        };
        self.reset();
        email
    }
}

/// `FROM:` / `TO:` (case-insensitive), tolerating a space after the colon.
fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| arg[keyword.len()..].trim_start())
}

/// Splits `<address> params` into the address (brackets and any source route
/// removed) and the parameters. A bare address without brackets is tolerated.
fn parse_path(s: &str) -> Option<(&str, &str)> {
    let (inner, params) = match s.strip_prefix('<') {
        Some(rest) => {
            let end = rest.find('>')?;
            (&rest[..end], &rest[end + 1..])
        }
        None => {
            let end = s.find(char::is_whitespace).unwrap_or(s.len());
            (&s[..end], &s[end..])
        }
    };
    // Obsolete source routes: `<@relay1,@relay2:user@host>`.
    let address = match inner.strip_prefix('@') {
        Some(_) => inner.split_once(':')?.1,
        None => inner,
    };
    if address.contains(char::is_whitespace) || address.contains(['<', '>']) {
        return None;
    }
    if params.starts_with(|c: char| !c.is_whitespace()) {
        return None; // `<a@b>junk`
    }
    Some((address, params))
}

/// Outcome of reading one line.
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// A complete line (with its LF) is in the buffer.
    Line,
    /// The line exceeded the limit; it was consumed and discarded.
    TooLong,
    /// The peer closed the connection (a partial last line is dropped).
    Eof,
}

/// Reads one LF-terminated line into `buf` (cleared first), at most `max`
/// bytes; a longer line is read to its end and discarded.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<LineRead> {
    buf.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX);
    let n = (&mut *reader).take(limit).read_until(b'\n', buf).await?;
    if buf.ends_with(b"\n") {
        return Ok(LineRead::Line);
    }
    if n < max {
        return Ok(LineRead::Eof);
    }
    // Too long: drop the rest of the line.
    loop {
        buf.clear();
        let n = (&mut *reader).take(64 * 1024).read_until(b'\n', buf).await?;
        if buf.ends_with(b"\n") {
            buf.clear();
            return Ok(LineRead::TooLong);
        }
        if n == 0 {
            return Ok(LineRead::Eof);
        }
    }
}

/// Writes one reply in one write and flushes it. Two small writes per
/// reply would meet Nagle's algorithm and the client's delayed ACK: about
/// 40 ms per reply, as a real SMTP server never takes.
async fn send<W: AsyncWrite + Unpin>(writer: &mut W, reply: &str) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(reply.len() + 2);
    line.extend_from_slice(reply.as_bytes());
    line.extend_from_slice(b"\r\n");
    writer.write_all(&line).await?;
    writer.flush().await
}

/// What reading a message body produced.
enum DataRead {
    Message(Vec<u8>),
    TooLarge,
    Eof,
}

/// Reads a message after `354` until the lone `.` line, undoing dot-stuffing.
async fn read_data<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<DataRead> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    let mut too_large = false;
    loop {
        // The `.` line itself needs 3 bytes beyond the message limit.
        let room = MAX_MESSAGE.saturating_sub(data.len()) + 3;
        let read = match tokio::time::timeout(IDLE_TIMEOUT, read_line(reader, room, &mut line)).await {
            Ok(read) => read?,
            Err(_) => return Ok(DataRead::Eof),
        };
        match read {
            LineRead::Eof => return Ok(DataRead::Eof),
            LineRead::TooLong => too_large = true,
            LineRead::Line => {
                if line == b".\r\n" || line == b".\n" {
                    break;
                }
                let content = line.strip_prefix(b".").unwrap_or(&line);
                if too_large || data.len() + content.len() > MAX_MESSAGE {
                    too_large = true;
                } else {
                    data.extend_from_slice(content);
                }
            }
        }
    }
    Ok(if too_large {
        DataRead::TooLarge
    } else {
        DataRead::Message(data)
    })
}

/// One client connection, from greeting to QUIT (or EOF, timeout, shutdown).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    mailbox: &Mailbox,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut writer = BufWriter::new(write);
    send(&mut writer, &format!("220 {HOSTNAME} ESMTP payhub sandbox SMTP sink")).await?;

    let mut session = Session::default();
    let mut line = Vec::new();
    loop {
        let read = tokio::select! {
            () = shutdown.cancelled() => {
                send(&mut writer, "421 4.3.2 Service shutting down").await?;
                return Ok(());
            }
            read = tokio::time::timeout(IDLE_TIMEOUT, read_line(&mut reader, MAX_COMMAND_LINE, &mut line)) => read,
        };
        let Ok(read) = read else {
            send(&mut writer, "421 4.4.2 Idle timeout, closing connection").await?;
            return Ok(());
        };
        match read? {
            LineRead::Eof => return Ok(()),
            LineRead::TooLong => {
                send(&mut writer, "500 5.5.2 Error: line too long").await?;
                continue;
            }
            LineRead::Line => {}
        }
        let raw = line.strip_suffix(b"\n").unwrap_or(&line);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(text) = std::str::from_utf8(raw) else {
            send(&mut writer, "500 5.5.2 Error: command is not valid UTF-8").await?;
            continue;
        };

        match session.command(text) {
            Action::Reply(reply) => send(&mut writer, &reply).await?,
            Action::Quit => {
                send(&mut writer, "221 2.0.0 Bye").await?;
                return Ok(());
            }
            Action::Data => {
                send(&mut writer, "354 End data with <CR><LF>.<CR><LF>").await?;
                match read_data(&mut reader).await? {
                    DataRead::Eof => return Ok(()),
                    DataRead::TooLarge => {
                        session.reset();
                        send(&mut writer, "552 5.3.4 Message size exceeds fixed maximum message size").await?;
                    }
                    DataRead::Message(data) => {
                        let email = session.finish(&data);
                        tracing::info!(
                            %peer,
                            recipients = email.rcpt_to.len(),
                            subject = email.subject.as_deref().unwrap_or(""),
                            "smtp sink received a message"
                        );
                        let id = {
                            let mut mails = lock(mailbox);
                            mails.push(email);
                            mails.len()
                        };
                        send(&mut writer, &format!("250 2.0.0 Ok: queued as {id}")).await?;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(a: Action) -> String {
        match a {
            Action::Reply(r) => r,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn command_sequence_and_errors() {
        let mut s = Session::default();
        assert!(reply(s.command("MAIL FROM:<a@b.c>")).starts_with("503"));
        assert!(reply(s.command("EHLO")).starts_with("501"));
        let ehlo = reply(s.command("ehlo client.example"));
        assert!(ehlo.starts_with("250-payhub-sandbox"));
        assert!(ehlo.contains("250-8BITMIME") && ehlo.contains("250-SMTPUTF8"));
        assert!(ehlo.ends_with("250 PIPELINING"));
        assert!(reply(s.command("DATA")).starts_with("503"));
        assert!(reply(s.command("RCPT TO:<x@y.z>")).starts_with("503"));
        assert!(reply(s.command("MAIL FROM:<a@b.c> BODY=8BITMIME SMTPUTF8 SIZE=100")).starts_with("250"));
        assert!(reply(s.command("MAIL FROM:<a@b.c>")).starts_with("503"));
        assert!(reply(s.command("DATA")).starts_with("554"));
        assert!(reply(s.command("RCPT TO:<>")).starts_with("501"));
        assert!(reply(s.command("RCPT TO:<x@y.z> NOTIFY=NEVER")).starts_with("555"));
        assert!(reply(s.command("rcpt to: <x@y.z>")).starts_with("250"));
        assert!(reply(s.command("RCPT TO:<@relay:w@y.z>")).starts_with("250"));
        assert_eq!(s.rcpt_to, ["x@y.z", "w@y.z"]);
        assert_eq!(s.command("DATA"), Action::Data);
        let mail = s.finish(b"Subject: hi\r\n\r\nbody\r\n");
        assert_eq!(mail.mail_from, "a@b.c");
        assert_eq!(mail.subject.as_deref(), Some("hi"));
        assert!(s.mail_from.is_none() && s.rcpt_to.is_empty());
        assert!(reply(s.command("MAIL FROM:<>")).starts_with("250"));
        assert!(reply(s.command("RSET")).starts_with("250"));
        assert!(s.mail_from.is_none());
        assert!(reply(s.command("MAIL FROM:<a@b.c> FOO=1")).starts_with("555"));
        assert!(reply(s.command("MAIL FROM:<a@b.c> SIZE=999999999")).starts_with("552"));
        assert!(reply(s.command("MAIL FROM:a@b.c")).starts_with("250"));
        assert!(reply(s.command("NOOP")).starts_with("250"));
        assert!(reply(s.command("STARTTLS")).starts_with("502"));
        assert!(reply(s.command("WHAT")).starts_with("500"));
        assert!(reply(s.command("")).starts_with("500"));
        assert_eq!(s.command("QUIT"), Action::Quit);
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path("<a@b.c>"), Some(("a@b.c", "")));
        assert_eq!(parse_path("<> SIZE=1"), Some(("", " SIZE=1")));
        assert_eq!(parse_path("<a@b.c>junk"), None);
        assert_eq!(parse_path("<a@b.c"), None);
        assert_eq!(parse_path("<a b@c>"), None);
    }

    #[tokio::test]
    async fn data_is_unstuffed_and_bounded() {
        let input: &[u8] = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nNOOP\r\n";
        let mut reader = BufReader::new(input);
        let DataRead::Message(data) = read_data(&mut reader).await.expect("reads") else {
            panic!("expected a message");
        };
        assert_eq!(data, b"Subject: x\r\n\r\n.leading dot\r\n");
        // What follows the terminator stays in the reader for the next command.
        let mut line = Vec::new();
        assert_eq!(
            read_line(&mut reader, 100, &mut line).await.expect("reads"),
            LineRead::Line
        );
        assert_eq!(line, b"NOOP\r\n");
    }

    #[tokio::test]
    async fn long_lines_are_discarded() {
        let mut input = vec![b'a'; 10_000];
        input.extend_from_slice(b"\r\nNOOP\r\npartial");
        let mut reader = BufReader::new(input.as_slice());
        let mut line = Vec::new();
        assert_eq!(
            read_line(&mut reader, 100, &mut line).await.expect("reads"),
            LineRead::TooLong
        );
        assert_eq!(
            read_line(&mut reader, 100, &mut line).await.expect("reads"),
            LineRead::Line
        );
        assert_eq!(line, b"NOOP\r\n");
        assert_eq!(
            read_line(&mut reader, 100, &mut line).await.expect("reads"),
            LineRead::Eof
        );
    }
}
