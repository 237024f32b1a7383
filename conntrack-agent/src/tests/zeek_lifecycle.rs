//! Zeek's removal-hooks and polling tests reproduced through the event core, as
//! zeek_threshold_tests.rs does for the threshold tests: a capability does what the test
//! script does and prints what it prints; the lines must equal Zeek's baselines
//! (../shared/reference/zeek-conn-semantics.md), with the host engine and, when root, the
//! kernel engine (whose polls read the connection from the BPF map).

use crate::cli::Engine;
use crate::core::events::{Capability, ConnEvent, ConnHandle};
use crate::core::removal_hooks::RemovalHook;
use crate::tests::zeek_thresholds::{assert_lines, conn_id, engines, run};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

type Out = Rc<RefCell<Vec<String>>>;

fn trace(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CONNTRACK_CONFORMANCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance")
        });
    let t = dir.join("traces").join(name);
    if t.is_file() {
        Some(t)
    } else {
        eprintln!("skipping: {} not found", t.display());
        None
    }
}

fn tf(b: bool) -> String {
    if b { "T" } else { "F" }.to_string()
}

/// `scripts/base/protocols/conn/removal-hooks.zeek`: the same hook registered three times at
/// new_connection (and, with `test_unregister`, unregistered three times); the hook prints.
struct RemovalHooksZeek {
    out: Out,
    hook: RemovalHook,
    test_unregister: bool,
}

impl RemovalHooksZeek {
    fn new(out: Out, test_unregister: bool) -> Self {
        let printed = out.clone();
        let hook = RemovalHook::new(move |c, _why| {
            let line = format!("my_removal_hook, {}", conn_id(c.conn()));
            printed.borrow_mut().push(line);
        });
        Self {
            out,
            hook,
            test_unregister,
        }
    }
}

impl Capability for RemovalHooksZeek {
    fn on_event(&mut self, c: &mut ConnHandle<'_>, event: &ConnEvent) {
        if *event != ConnEvent::New {
            return;
        }
        let mut out = vec![format!("new_connection, {}", conn_id(c.conn()))];
        for _ in 0..3 {
            out.push(tf(c.register_removal_hook(&self.hook)));
        }
        if self.test_unregister {
            for _ in 0..3 {
                out.push(tf(c.unregister_removal_hook(&self.hook)));
            }
        }
        self.out.borrow_mut().extend(out);
    }
}

const REMOVAL_HOOKS_OUT: &str = "\
new_connection, [orig_h=141.142.228.5, orig_p=59856/tcp, resp_h=192.150.187.43, resp_p=80/tcp, proto=6, ctx=[]]
T
F
F
my_removal_hook, [orig_h=141.142.228.5, orig_p=59856/tcp, resp_h=192.150.187.43, resp_p=80/tcp, proto=6, ctx=[]]
new_connection, [orig_h=141.142.228.5, orig_p=59856/tcp, resp_h=192.150.187.43, resp_p=80/tcp, proto=6, ctx=[]]
T
F
F
T
F
F
";

#[test]
fn zeek_removal_hooks_test_output_is_reproduced() {
    let Some(trace) = trace("http__get.pcap") else {
        return;
    };
    for engine in engines() {
        // The btest runs the script twice, appending both outputs to one file.
        let mut got = run(&trace, engine, |o| {
            Box::new(RemovalHooksZeek::new(o, false))
        });
        got.extend(run(&trace, engine, |o| {
            Box::new(RemovalHooksZeek::new(o, true))
        }));
        assert_lines(engine, &got, REMOVAL_HOOKS_OUT);
    }
}

/// `scripts/base/protocols/conn/polling.test`: `ConnPolling::watch(c, callback, 0, 0secs)` at
/// new_connection; the callback prints and asks again in 0.2 s until `cnt >= stop_cnt`.
struct PollingZeek {
    out: Out,
    stop_cnt: u64,
}

impl Capability for PollingZeek {
    fn on_event(&mut self, c: &mut ConnHandle<'_>, event: &ConnEvent) {
        if *event != ConnEvent::New {
            return;
        }
        let line = format!("new_connection, {}", conn_id(c.conn()));
        self.out.borrow_mut().push(line);
        let (out, stop_cnt) = (self.out.clone(), self.stop_cnt);
        let callback = move |c: &mut ConnHandle<'_>, cnt: u64| {
            let line = format!("callback, {}, {cnt}", conn_id(c.conn()));
            out.borrow_mut().push(line);
            (cnt < stop_cnt).then_some(Duration::from_millis(200))
        };
        c.watch(callback, 0, Duration::ZERO);
    }
}

fn polling_out(last_cnt: u64) -> String {
    let id = "[orig_h=192.168.3.103, orig_p=54102/tcp, resp_h=128.146.216.51, resp_p=80/tcp, proto=6, ctx=[]]";
    let mut s = format!("new_connection, {id}\n");
    for cnt in 0..=last_cnt {
        s.push_str(&format!("callback, {id}, {cnt}\n"));
    }
    s
}

fn polling(stop_cnt: u64) -> Vec<(Engine, Vec<String>)> {
    let Some(trace) = trace("http__100-continue.pcap") else {
        return Vec::new();
    };
    engines()
        .into_iter()
        .map(|engine| {
            let got = run(&trace, engine, |out| {
                Box::new(PollingZeek { out, stop_cnt })
            });
            (engine, got)
        })
        .collect()
}

#[test]
fn zeek_polling_test_output_is_reproduced_with_stop_cnt_10() {
    // The connection outlives five polls; the sixth is the one pending at the end of input.
    for (engine, got) in polling(10) {
        assert_lines(engine, &got, &polling_out(5));
    }
}

#[test]
fn zeek_polling_test_output_is_reproduced_with_stop_cnt_2() {
    for (engine, got) in polling(2) {
        assert_lines(engine, &got, &polling_out(2));
    }
}
