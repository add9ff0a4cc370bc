//! A task's final answer, written by a model, rendered as safe HTML: Markdown becomes
//! markup, but raw HTML in it is shown as text, links keep only http(s), mailto and
//! relative targets, and images become links (nothing loads from elsewhere).

use pulldown_cmark::{CowStr, Event, LinkType, Options, Parser, Tag, TagEnd, html};

fn safe_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    match lower.split_once(':') {
        // A colon before any slash, ? or # names a scheme.
        Some((scheme, _)) if !scheme.contains(['/', '?', '#']) => {
            matches!(scheme, "http" | "https" | "mailto")
        }
        _ => true,
    }
}

/// Markdown → HTML that is safe to put in a page as is.
pub fn to_html(markdown: &str) -> String {
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let events = Parser::new_ext(markdown, opts).map(|ev| match ev {
        Event::Html(s) | Event::InlineHtml(s) => Event::Text(s),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            let dest_url = if safe_url(&dest_url) {
                dest_url
            } else {
                CowStr::Borrowed("#")
            };
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            })
        }
        Event::Start(Tag::Image {
            dest_url,
            title,
            id,
            ..
        }) => {
            let dest_url = if safe_url(&dest_url) {
                dest_url
            } else {
                CowStr::Borrowed("#")
            };
            Event::Start(Tag::Link {
                link_type: LinkType::Inline,
                dest_url,
                title,
                id,
            })
        }
        Event::End(TagEnd::Image) => Event::End(TagEnd::Link),
        other => other,
    });
    let mut out = String::with_capacity(markdown.len() * 2);
    html::push_html(&mut out, events);
    out
}

#[cfg(test)]
mod tests {
    use super::to_html;

    #[test]
    fn markdown_becomes_markup_and_html_stays_text() {
        let h = to_html("# Title\n\n**bold** and `code`\n\n- a\n- b");
        assert!(h.contains("<h1>Title</h1>"), "{h}");
        assert!(h.contains("<strong>bold</strong>"));
        assert!(h.contains("<li>a</li>"));
        let h = to_html("<script>alert(1)</script>\n\nhi <img src=x onerror=alert(1)>");
        assert!(!h.contains("<script"), "{h}");
        assert!(!h.contains("<img"), "{h}");
        assert!(h.contains("&lt;script&gt;"), "{h}");
    }

    #[test]
    fn links_keep_only_safe_targets() {
        let h = to_html("[x](javascript:alert(1)) [y](https://example.com) [z](/tasks)");
        assert!(!h.contains("javascript:"), "{h}");
        assert!(h.contains("href=\"https://example.com\""));
        assert!(h.contains("href=\"/tasks\""));
        let h = to_html("![pic](https://tracker.example/p.png)");
        assert!(!h.contains("<img"), "{h}");
        assert!(
            h.contains("<a href=\"https://tracker.example/p.png\">pic</a>"),
            "{h}"
        );
        let h = to_html("[d](data:text/html,hi) [v]( VBScript:x)");
        assert!(!h.contains("data:"), "{h}");
        assert!(!h.to_ascii_lowercase().contains("vbscript"), "{h}");
    }
}
