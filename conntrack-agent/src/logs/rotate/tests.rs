use super::*;

const S: i64 = 1_000_000_000;
/// 2026-11-28 10:00:00 UTC.
const T0: i64 = 1_795_860_000 * S;

fn header() -> Option<HeaderFn> {
    Some(Box::new(|open| {
        format!("#path\tx\n#open\t{}\n", fmt_log_date(open))
    }))
}

fn log(dir: &Path, policy: RotationPolicy) -> LogFile {
    let opts = LogOptions {
        rotation: policy,
        stdout: false,
    };
    LogFile::create(&dir.join("x.log"), "x", header(), opts, false).unwrap()
}

/// `x.log` on a disk with `room` bytes left, holding up to `backlog` records on errors.
fn log_on_small_disk(
    dir: &Path,
    room: &Arc<std::sync::atomic::AtomicUsize>,
    backlog: u64,
) -> LogFile {
    let mut l = log(dir, RotationPolicy::default());
    let file = l.sink.file().unwrap().try_clone().unwrap();
    l.sink = Sink::Limited {
        file,
        room: room.clone(),
    };
    l.on_error = OnWriteError::Hold { backlog };
    l.retry = Duration::ZERO;
    l
}

fn records(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn a_full_disk_holds_records_and_writes_them_in_order_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let room = Arc::new(std::sync::atomic::AtomicUsize::new(600));
    let mut l = log_on_small_disk(dir.path(), &room, 50);
    let line = |i: usize| format!("record {i:03} {}", "x".repeat(40));
    for i in 0..30 {
        l.write_line(&line(i), Some(T0)).unwrap();
        l.flush().unwrap();
    }
    // The disk is full: only whole lines on it, the rest held.
    let text = std::fs::read_to_string(dir.path().join("x.log")).unwrap();
    assert!(text.ends_with('\n'), "a record was split: {text:?}");
    let on_disk = records(&text).len();
    assert!(on_disk > 0 && on_disk < 30, "{on_disk}");
    assert!(l.health.failing.load(Ordering::Relaxed));
    assert_eq!(
        l.health.pending.load(Ordering::Relaxed),
        30 - on_disk as u64
    );
    // Space again: everything, in order, once.
    room.store(usize::MAX, Ordering::Relaxed);
    for i in 30..40 {
        l.write_line(&line(i), Some(T0)).unwrap();
    }
    l.close().unwrap();
    let text = std::fs::read_to_string(dir.path().join("x.log")).unwrap();
    let want: Vec<String> = (0..40).map(line).collect();
    assert_eq!(records(&text), want);
    assert!(text.ends_with(&format!("#close\t{}\n", date_ns(T0))));
    assert_eq!(l.health.dropped.load(Ordering::Relaxed), 0);
    assert!(!l.health.failing.load(Ordering::Relaxed));
}

#[test]
fn past_the_backlog_records_are_counted_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let room = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut l = log_on_small_disk(dir.path(), &room, 10);
    for i in 0..25 {
        l.write_line(&format!("r{i}"), Some(T0)).unwrap();
        l.flush().unwrap();
    }
    // The header's two lines count against the backlog too: 8 records held.
    assert_eq!(l.buf_lines, 10);
    assert_eq!(l.health.dropped.load(Ordering::Relaxed), 25 - 8);
    room.store(usize::MAX, Ordering::Relaxed);
    l.close().unwrap();
    let text = std::fs::read_to_string(dir.path().join("x.log")).unwrap();
    let want: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    assert_eq!(records(&text), want);
    assert!(l.health.summary().unwrap().contains("17 records were lost"));
}

#[test]
fn a_write_error_in_read_names_the_file_and_leaves_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let room = Arc::new(std::sync::atomic::AtomicUsize::new(500));
    let mut l = log_on_small_disk(dir.path(), &room, 10);
    l.on_error = OnWriteError::Fail;
    let err = (0..100)
        .find_map(|i| {
            l.write_line(&format!("record {i} {}", "y".repeat(30)), Some(T0))
                .and_then(|()| l.flush())
                .err()
        })
        .expect("the disk fills");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("x.log") && msg.contains("os error 28"),
        "{msg}"
    );
    let text = std::fs::read_to_string(dir.path().join("x.log")).unwrap();
    assert!(text.ends_with('\n'), "{text:?}");
    let whole = |r: &&str| r.starts_with("record ") && r.ends_with(&"y".repeat(30));
    assert!(records(&text).iter().all(whole), "{text:?}");
}

#[test]
fn a_file_in_place_of_the_log_directory_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("afile");
    std::fs::write(&file, "x").unwrap();
    let err = LogFile::create(
        &file.join("conn.log"),
        "conn",
        None,
        LogOptions::default(),
        false,
    )
    .err()
    .expect("not a directory");
    let msg = format!("{err:#}");
    assert!(msg.contains("afile is not a directory"), "{msg}");
    assert!(!msg.contains("File exists"), "{msg}");
}

#[test]
fn names_follow_zeeks_date_format() {
    assert_eq!(rotated_name("conn", T0, 0), "conn.2026-11-28-10-00-00.log");
    assert_eq!(
        rotated_name("conn", T0 + 61 * S + 5, 2),
        "conn.2026-11-28-10-01-01-2.log"
    );
    assert_eq!(
        next_boundary(T0 + 5 * S, Duration::from_secs(3600)),
        T0 + 3600 * S
    );
    assert_eq!(next_boundary(T0, Duration::from_secs(3600)), T0 + 3600 * S);
}

#[test]
fn size_rotation_keeps_records_whole_and_closes_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = log(
        dir.path(),
        RotationPolicy {
            interval: None,
            size: Some(100),
            command: None,
            ..Default::default()
        },
    );
    let lines: Vec<String> = (0..40)
        .map(|i| format!("record-{i:03}-{}", "x".repeat(i % 7)))
        .collect();
    for (i, line) in lines.iter().enumerate() {
        l.write_line(line, Some(T0 + i as i64 * S)).unwrap();
    }
    l.close().unwrap();
    let rotated = l.rotated().to_vec();
    assert!(rotated.len() >= 5, "{rotated:?}");
    let mut all = Vec::new();
    for p in rotated.iter().chain([dir.path().join("x.log")].iter()) {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(
            text.starts_with("#path\tx\n#open\t"),
            "{}: {text}",
            p.display()
        );
        assert!(
            text.lines().last().unwrap().starts_with("#close\t"),
            "{text}"
        );
        let recs = records(&text);
        assert!(!recs.is_empty());
        // Over the limit only when a single record does not fit.
        assert!(text.len() <= 100 + "#close\t2026-11-28-10-00-00\n".len() || recs.len() == 1);
        all.extend(recs.iter().map(|s| s.to_string()));
    }
    assert_eq!(all, lines, "every record once, in order");
    // The first file is named after its open time (the first record's network time).
    assert!(
        rotated[0].ends_with("x.2026-11-28-10-00-00.log"),
        "{rotated:?}"
    );
}

#[test]
fn interval_rotation_on_boundaries_by_network_time() {
    let dir = tempfile::tempdir().unwrap();
    let hour = Duration::from_secs(3600);
    let mut l = log(
        dir.path(),
        RotationPolicy {
            interval: Some(hour),
            size: None,
            command: None,
            ..Default::default()
        },
    );
    assert_eq!(l.next_rotation_ns(), None, "not opened yet");
    l.write_line("a", Some(T0 + 10 * S)).unwrap();
    assert_eq!(l.next_rotation_ns(), Some(T0 + 3600 * S));
    l.write_line("b", Some(T0 + 3599 * S)).unwrap();
    // Past 11:00: rotated before the record, at the time that passed the hour.
    l.write_line("c", Some(T0 + 3601 * S)).unwrap();
    // Idle past 12:00 and 13:00: a tick rotates (an empty file for the idle hour).
    l.tick(T0 + 2 * 3600 * S + 7 * S).unwrap();
    l.write_line("d", Some(T0 + 3 * 3600 * S + 1)).unwrap();
    l.tick(T0 + 3 * 3600 * S + 20 * S).unwrap();
    l.close().unwrap();
    let names: Vec<String> = l
        .rotated()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "x.2026-11-28-10-00-10.log",
            "x.2026-11-28-11-00-01.log",
            "x.2026-11-28-12-00-07.log"
        ]
    );
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    assert_eq!(records(&read(&l.rotated()[0])), ["a", "b"]);
    assert_eq!(records(&read(&l.rotated()[1])), ["c"]);
    assert!(records(&read(&l.rotated()[2])).is_empty());
    let second = read(&l.rotated()[1]);
    assert!(second.contains("#open\t2026-11-28-11-00-01\n"), "{second}");
    assert!(
        second.ends_with("#close\t2026-11-28-12-00-07\n"),
        "{second}"
    );
    let cur = read(&dir.path().join("x.log"));
    assert!(cur.contains("#open\t2026-11-28-13-00-00\n"), "{cur}");
    assert_eq!(records(&cur), ["d"]);
    // Closed at the last network time seen.
    assert!(cur.ends_with("#close\t2026-11-28-13-00-20\n"), "{cur}");
}

#[test]
fn same_second_rotations_do_not_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = log(
        dir.path(),
        RotationPolicy {
            interval: None,
            size: Some(1),
            command: None,
            ..Default::default()
        },
    );
    for r in ["a", "b", "c"] {
        l.write_line(r, Some(T0)).unwrap();
    }
    l.close().unwrap();
    let names: Vec<String> = l
        .rotated()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["x.2026-11-28-10-00-00.log", "x.2026-11-28-10-00-00-1.log"]
    );
}

#[test]
fn headerless_logs_rotate_without_close_lines() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        rotation: RotationPolicy {
            interval: None,
            size: Some(4),
            command: None,
            ..Default::default()
        },
        stdout: false,
    };
    let mut l = LogFile::create(&dir.path().join("j.log"), "j", None, opts, true).unwrap();
    l.write_line("{}", Some(T0)).unwrap();
    l.write_line("{}", Some(T0 + S)).unwrap();
    l.close().unwrap();
    assert_eq!(std::fs::read_to_string(&l.rotated()[0]).unwrap(), "{}\n");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("j.log")).unwrap(),
        "{}\n"
    );
}

#[test]
fn a_failed_rename_keeps_writing_to_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = log(
        dir.path(),
        RotationPolicy {
            interval: None,
            size: Some(1),
            command: None,
            ..Default::default()
        },
    );
    l.write_line("a", Some(T0)).unwrap();
    // The live file is gone (removed by hand): the rename fails.
    std::fs::remove_file(dir.path().join("x.log")).unwrap();
    l.write_line("b", Some(T0 + S)).unwrap();
    l.write_line("c", Some(T0 + 2 * S)).unwrap();
    l.close().unwrap();
    assert!(l.rotated().is_empty());
}

#[test]
fn the_rotate_command_runs_on_each_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = log(
        dir.path(),
        RotationPolicy {
            interval: None,
            size: Some(1),
            command: Some("mv \"$1\" \"$1.done\"".into()),
            ..Default::default()
        },
    );
    for (i, r) in ["a", "b", "c"].iter().enumerate() {
        l.write_line(r, Some(T0 + i as i64 * S)).unwrap();
    }
    l.close().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "x.2026-11-28-10-00-00.log.done",
            "x.2026-11-28-10-00-01.log.done",
            "x.log"
        ]
    );
    let done = std::fs::read_to_string(dir.path().join("x.2026-11-28-10-00-01.log.done"));
    assert!(done.unwrap().contains("\nb\n#close\t"));
}

#[test]
fn a_log_left_by_an_earlier_run_is_rotated_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.log"), "#path\tx\nold\n").unwrap();
    let policy = RotationPolicy {
        interval: Some(Duration::from_secs(3600)),
        size: None,
        command: None,
        ..Default::default()
    };
    let mut l = log(dir.path(), policy.clone());
    l.write_line("new", Some(T0)).unwrap();
    l.close().unwrap();
    let kept = &l.rotated()[0];
    assert!(
        kept.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("x.20")
    );
    assert_eq!(std::fs::read_to_string(kept).unwrap(), "#path\tx\nold\n");
    let cur = std::fs::read_to_string(dir.path().join("x.log")).unwrap();
    assert_eq!(records(&cur), ["new"]);
    // Without rotation the log is overwritten as before (and an empty one always is).
    let l = log(dir.path(), RotationPolicy::default());
    drop(l);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn sizes_and_intervals_parse() {
    assert_eq!(parse_size("1000"), Ok(1000));
    assert_eq!(parse_size("10k"), Ok(10 << 10));
    assert_eq!(parse_size("100M"), Ok(100 << 20));
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    assert!(parse_size("0").is_err());
    assert!(parse_size("10T").unwrap_err().contains("suffix"));
    assert!(parse_size("lots").is_err());
    assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
    assert!(parse_interval("10ms").is_err());
    assert!(parse_interval("hourly").is_err());
}
