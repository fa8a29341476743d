//! Run with: `cargo run -p crm` (this module renders its pages).
//!
//! The CRM's HTML, server-rendered with plain `format!` and escaping: the login form
//! (`authenticate.shtml` of the 4D example), the home page with the top 3 customers read
//! from session storage, the WebAdmin page, and the external-payment page whose
//! heartbeat is off. Every page loads the sessiond heartbeat script. Nothing is inline:
//! the style and the page script are files ([`STYLE`], [`SCRIPT`]), so the pages run
//! under a CSP that allows only this origin's files ([`CSP`]).

use sessiond_core::Session as Record;

use crate::data::{Customer, DemoLogin};

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The CRM's style sheet, served at `/static/crm.css`.
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;\
padding:0 1rem;color:#222}h1{font-size:1.5rem}table{border-collapse:collapse;width:100%}\
td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left}td.num{text-align:right}\
.error{color:#a00}.hint{color:#555;font-size:.9rem}footer{margin-top:2rem;color:#666;\
font-size:.8rem}nav a,nav button{margin-right:1rem}label{display:block;margin:.5rem 0}\
form.inline{display:inline}";

/// The pages' script, served at `/static/crm.js`: shows the heartbeat's state.
pub const SCRIPT: &str = "document.addEventListener('sessiond:heartbeat',function(e){\
var s=document.getElementById('heartbeat-state'),h=e.detail;if(!s)return;\
s.textContent=h.active?('on, every '+h.interval+' s'):'off';});";

/// The Content-Security-Policy of every CRM response: this origin's scripts, styles,
/// images and requests only, forms posted only here, never framed, no `<base>` or
/// plugins. An injected `<script>` or `style=` does not run.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// A whole page: `heartbeat` is the script tag's extra attributes (`None`: no script).
fn page(title: &str, body: &str, session_id: Option<&str>, heartbeat: Option<&str>) -> String {
    let footer = match session_id {
        Some(id) => format!(
            "<footer>Session <code id=\"session-id\">{}</code> \
             · heartbeat <span id=\"heartbeat-state\">starting</span></footer>",
            esc(id)
        ),
        None => String::new(),
    };
    let script = match heartbeat {
        Some(attrs) => format!(
            "<script src=\"/static/crm.js\"></script>\
             <script src=\"/_sessiond/heartbeat.js\"{attrs} defer></script>"
        ),
        None => String::new(),
    };
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{} · CRM</title>\
         <link rel=\"stylesheet\" href=\"/static/crm.css\">{script}</head><body>{body}{footer}</body></html>",
        esc(title)
    )
}

/// The login form, with an error message and the page to go to afterwards.
pub fn login(error: Option<&str>, next: &str, demo: &[DemoLogin], names: &[String]) -> String {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"error\" id=\"error\">{}</p>", esc(e))
    });
    let hints: String = demo
        .iter()
        .zip(names)
        .map(|(d, n)| {
            format!(
                "<li><code>{}</code> / <code>{}</code> ({})</li>",
                d.user_id,
                esc(d.password),
                esc(n)
            )
        })
        .collect();
    let body = format!(
        "<h1>CRM: sign in</h1>{error}\
         <form action=\"/authenticate\" method=\"post\">\
         <label>UserId: <input type=\"text\" name=\"userId\" id=\"userId\" autocomplete=\"username\"></label>\
         <label>Password: <input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"current-password\"></label>\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <input type=\"submit\" name=\"OK\" id=\"login\" value=\"Log In\"></form>\
         <p class=\"hint\">Demo accounts (user id / password):</p><ul class=\"hint\">{hints}</ul>",
        esc(next)
    );
    page("Sign in", &body, None, None)
}

fn nav(admin: bool) -> String {
    let admin = if admin {
        "<a href=\"/admin\" id=\"admin-link\">WebAdmin</a>"
    } else {
        ""
    };
    format!(
        "<nav><a href=\"/home\">Home</a>{admin}<a href=\"/payment\" id=\"payment-link\">Pay an invoice</a>\
         <a href=\"/sessions\" id=\"sessions-link\">Your sessions</a>\
         <form action=\"/logout\" method=\"post\" class=\"inline\">\
         <button type=\"submit\" id=\"logout\">Log out</button></form></nav>"
    )
}

fn money(euros: u64) -> String {
    let digits = euros.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    format!("{out} €")
}

/// The home page (`authenticationOK.shtml`): the top 3 customers from session storage.
pub fn home(user_name: &str, top3: &[Customer], admin: bool, session_id: &str) -> String {
    let rows: String = top3
        .iter()
        .map(|c| {
            format!(
                "<tr><td class=\"customer\">{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
                esc(&c.name),
                esc(&c.city),
                money(c.total_purchase)
            )
        })
        .collect();
    let body = format!(
        "{}<h1 id=\"welcome\">Welcome, {}</h1>\
         <h2>Your top 3 customers</h2>\
         <table id=\"top3\"><tr><th>Customer</th><th>City</th><th>Total purchase</th></tr>{rows}</table>\
         <p class=\"hint\">Loaded once into session storage (<code>myTop3</code>) at login and \
         read from the session on every page since.</p>",
        nav(admin),
        esc(user_name)
    );
    page("Home", &body, Some(session_id), Some(""))
}

/// The external payment step: the heartbeat is off on this page, so only the idle
/// timeout can end the session meanwhile.
pub fn payment(idle_timeout_s: u32, admin: bool, session_id: &str) -> String {
    let body = format!(
        "{}<h1>Pay an invoice</h1>\
         <p id=\"payment\">You are on the payment provider's page. While you are here the \
         session heartbeat is off (as on an external site that cannot send it), so your \
         session ends only if you stay idle for {idle_timeout_s} s.</p>",
        nav(admin)
    );
    page(
        "Payment",
        &body,
        Some(session_id),
        Some(" data-active=\"false\""),
    )
}

/// One row of "your sessions": where and when a session was opened and last used.
fn session_row(s: &Record, action: &str) -> String {
    let ip = s.client.ip.map(|i| i.to_string()).unwrap_or_default();
    let agent = s.client.user_agent.as_deref().unwrap_or("");
    format!(
        "<tr class=\"session\" data-id=\"{id}\"><td>{}</td><td class=\"agent\">{}</td>\
         <td>{}</td><td>{}</td><td>{action}</td></tr>",
        esc(&ip),
        esc(agent),
        esc(&s.created_at.to_rfc3339()),
        esc(&s.last_activity_at.to_rfc3339()),
        id = esc(&s.id.to_string()),
    )
}

/// "Your sessions": this one, then the user's other open sessions, each with a button
/// that signs it out, and one that signs out every other. Never a token.
pub fn sessions(me: &Record, others: &[Record], admin: bool, notice: Option<&str>) -> String {
    let current = session_row(me, "<em>this browser</em>");
    let rows: String = others
        .iter()
        .map(|s| {
            let id = esc(&s.id.to_string());
            let button = format!(
                "<form action=\"/sessions/{id}/close\" method=\"post\" class=\"inline\">\
                 <button type=\"submit\" class=\"close-session\">Sign out</button></form>"
            );
            session_row(s, &button)
        })
        .collect();
    let all = if others.is_empty() {
        "<p id=\"no-others\">You are signed in nowhere else.</p>".to_string()
    } else {
        "<form action=\"/sessions/close-others\" method=\"post\">\
         <button type=\"submit\" id=\"close-others\">Sign out everywhere else</button></form>"
            .to_string()
    };
    let notice = notice.map_or(String::new(), |n| {
        format!("<p class=\"hint\" id=\"notice\">{}</p>", esc(n))
    });
    let body = format!(
        "{}<h1 id=\"sessions-title\">Your sessions</h1>{notice}\
         <table id=\"my-sessions\"><tr><th>Address</th><th>Browser</th><th>Signed in</th>\
         <th>Last active</th><th></th></tr>{current}{rows}</table>{all}",
        nav(admin)
    );
    page("Your sessions", &body, Some(&me.id.to_string()), Some(""))
}

/// The WebAdmin page: the open sessions of the app.
pub fn admin(sessions: &[Record], session_id: &str) -> String {
    let rows: String = sessions
        .iter()
        .map(|s| {
            let name = s
                .info
                .get("userName")
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let heartbeat = match s.heartbeat {
                Some(h) if h.active => format!("every {} s (+{} s)", h.interval_s, h.grace_s),
                Some(_) => "off".to_string(),
                None => "none".to_string(),
            };
            let privileges: Vec<&str> = s.privileges.iter().collect();
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&s.id.to_string()),
                esc(&name),
                esc(&privileges.join(", ")),
                esc(&s.created_at.to_rfc3339()),
                esc(&s.last_activity_at.to_rfc3339()),
                esc(&heartbeat)
            )
        })
        .collect();
    let body = format!(
        "{}<h1 id=\"admin-title\">WebAdmin: open sessions</h1>\
         <table id=\"sessions\"><tr><th>Id</th><th>User</th><th>Privileges</th><th>Opened</th>\
         <th>Last activity</th><th>Heartbeat</th></tr>{rows}</table>",
        nav(true)
    );
    page("WebAdmin", &body, Some(session_id), Some(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(
            esc("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(money(1_234_567), "1 234 567 €");
        assert_eq!(money(999), "999 €");
    }
}
