//! How the pages write times and durations: relative times ("3 min ago") with the exact time
//! on hover, and durations a person reads at a glance ("1.2 s", "3 min 4 s").
use chrono::{DateTime, Utc};
use leptos::prelude::*;

/// `ms` as a short human-readable duration.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        return format!("{ms} ms");
    }
    if ms < 10_000 {
        return format!("{:.1} s", ms as f64 / 1_000.0);
    }
    let s = ms / 1_000;
    if s < 60 {
        return format!("{s} s");
    }
    let (m, s) = (s / 60, s % 60);
    if m < 60 {
        return if s == 0 {
            format!("{m} min")
        } else {
            format!("{m} min {s} s")
        };
    }
    let (h, m) = (m / 60, m % 60);
    if h < 24 {
        return if m == 0 {
            format!("{h} h")
        } else {
            format!("{h} h {m} min")
        };
    }
    let (d, h) = (h / 24, h % 24);
    if h == 0 {
        format!("{d} d")
    } else {
        format!("{d} d {h} h")
    }
}

/// `t` relative to `now`: "just now", "42 s ago", "5 min ago", "3 h ago", "2 d ago", or "in 10 s"
/// for a time still ahead (a delayed run).
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (ahead, secs) = (secs < 0, secs.abs());
    if secs < 5 {
        return "just now".into();
    }
    let span = if secs < 60 {
        format!("{secs} s")
    } else if secs < 3_600 {
        format!("{} min", secs / 60)
    } else if secs < 86_400 {
        format!("{} h", secs / 3_600)
    } else {
        format!("{} d", secs / 86_400)
    };
    if ahead {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// The exact time, as shown on hover.
pub fn exact(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

/// A time shown relative to now, with the exact time on hover and in `datetime`.
#[component]
pub fn When(t: DateTime<Utc>) -> impl IntoView {
    view! {
        <time datetime=t.to_rfc3339() title=exact(t)>{relative(t, Utc::now())}</time>
    }
}

/// An optional time; a dash when absent.
#[component]
pub fn MaybeWhen(t: Option<DateTime<Utc>>) -> impl IntoView {
    match t {
        Some(t) => view! { <When t/> }.into_any(),
        None => view! { <span class="muted">"–"</span> }.into_any(),
    }
}

/// A duration in milliseconds, human-readable, with the exact figure on hover.
#[component]
pub fn Duration(ms: Option<i64>) -> impl IntoView {
    match ms {
        Some(ms) => view! { <span title=format!("{ms} ms")>{duration(ms)}</span> }.into_any(),
        None => view! { <span class="muted">"–"</span> }.into_any(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn durations_read_at_a_glance() {
        let cases = [
            (0, "0 ms"),
            (-5, "0 ms"),
            (999, "999 ms"),
            (1_000, "1.0 s"),
            (1_234, "1.2 s"),
            (9_949, "9.9 s"),
            (10_000, "10 s"),
            (59_999, "59 s"),
            (60_000, "1 min"),
            (184_000, "3 min 4 s"),
            (3_600_000, "1 h"),
            (7_500_000, "2 h 5 min"),
            (86_400_000, "1 d"),
            (90_000_000, "1 d 1 h"),
        ];
        for (ms, want) in cases {
            assert_eq!(duration(ms), want, "{ms} ms");
        }
    }

    #[test]
    fn relative_times_in_both_directions() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ago = |s: i64| relative(now - TimeDelta::seconds(s), now);
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(4), "just now");
        assert_eq!(ago(42), "42 s ago");
        assert_eq!(ago(60), "1 min ago");
        assert_eq!(ago(3_599), "59 min ago");
        assert_eq!(ago(3 * 3_600 + 5), "3 h ago");
        assert_eq!(ago(2 * 86_400), "2 d ago");
        assert_eq!(ago(-10), "in 10 s");
        assert_eq!(ago(-120), "in 2 min");
        assert_eq!(exact(now), "2026-11-23 12:00:00.000 UTC");
    }
}
