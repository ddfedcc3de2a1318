//! The conversions as pure functions: supervisord text in, holdfast TOML and report out;
//! a validated spec in, a `[program:x]` section out.

use std::path::Path;

use super::{Context, import};
use crate::config::parse;
use crate::model::ServiceName;

fn ctx() -> Context {
    Context {
        here: "/etc/supervisor".into(),
        env: [("HOME".to_owned(), "/root".to_owned())].into(),
        host_node_name: "box".into(),
    }
}

fn table(text: &str) -> toml::Table {
    let imported = import(text, "t.conf", &ctx()).expect("imports");
    toml::from_str(&imported.toml).expect("valid TOML")
}

fn error_line(text: &str) -> usize {
    import(text, "t.conf", &ctx()).expect_err("refused").line
}

#[test]
fn expansions_use_the_program_the_file_and_the_environment() {
    let t = table(
        "[program:web]\ncommand=/bin/echo %(program_name)s %(here)s %(host_node_name)s %(ENV_HOME)s %(ENV_X)s %(group_name)s\nenvironment=X=\"1\"\n[group:g]\nprograms=web\n",
    );
    let args: Vec<&str> = t["service"]["web"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "/bin/echo",
            "web",
            "/etc/supervisor",
            "box",
            "/root",
            "1",
            "g"
        ]
    );
}

#[test]
fn numprocs_start_becomes_an_instance_offset() {
    let t = table(
        "[program:w]\ncommand=/bin/w --port=%(process_num)d\nnumprocs=2\nnumprocs_start=8080\nprocess_name=w%(process_num)d\nenvironment=ID=w-%(process_num)d\nstdout_logfile=/tmp/w-%(process_num)02d.log\n",
    );
    assert_eq!(
        t["service"]["w"]["command"][1].as_str(),
        Some("--port={instance+8080}")
    );
    assert_eq!(t["service"]["w"]["instances"].as_integer(), Some(2));
    assert_eq!(
        t["service"]["w"]["env"]["ID"].as_str(),
        Some("w-{instance+8080}")
    );
}

#[test]
fn what_supervisord_refuses_is_an_error_at_its_line() {
    assert_eq!(error_line("[program:a]\nautostart=maybe\ncommand=x\n"), 2);
    assert_eq!(error_line("[program:a]\ncommand=x\nexitcodes=0,256\n"), 3);
    assert_eq!(error_line("[program:a]\ncommand='x\n"), 2);
    assert_eq!(error_line("[program:a]\ncommand=x\nnumprocs=2\n"), 1);
    assert_eq!(error_line("[program:a]\ndirectory=/tmp\n"), 1);
    assert_eq!(error_line("[program:a]\ncommand=x %(nope)s\n"), 2);
    assert_eq!(error_line("[program:a b]\ncommand=x\n"), 1);
    assert_eq!(
        error_line("[program:a]\ncommand=x\nstopasgroup=true\nkillasgroup=false\n"),
        4
    );
    assert_eq!(error_line("[program:a]\ncommand=x\nenvironment=A=1,B\n"), 3);
}

#[test]
fn priorities_become_start_order_by_level() {
    let t = table(
        "[program:a]\ncommand=x\npriority=1\n[program:b]\ncommand=x\npriority=1\n[program:c]\ncommand=x\npriority=5\n[program:d]\ncommand=x\n",
    );
    let after = |n: &str| t["service"][n].get("after").cloned();
    assert_eq!(after("a"), None);
    assert_eq!(
        after("c"),
        Some(toml::Value::Array(vec!["a".into(), "b".into()]))
    );
    assert_eq!(after("d"), Some(toml::Value::Array(vec!["c".into()])));
}

#[test]
fn an_exported_program_reads_back_as_the_same_command_and_environment() {
    let src = r##"
        [service.web]
        command = ["/bin/sh", "-c", "echo 'a ;b' \"#c\" 100% $HOME \\x", "", "a'b"]
        env = { GREETING = "hi, \"you\" there", PCT = "50% ;x" , EMPTY = "" }
    "##;
    let plan = parse(src, "t.toml", Path::new("/etc/holdfast")).expect("valid");
    let spec = &plan.services[&ServiceName::new("web").unwrap()];
    let section = super::export::program(spec, None, 100);
    // `PCT` puts `;` after a blank: no INI can carry it.
    assert!(section.is_err(), "{section:?}");
    let src = src.replace(" ;x", ";x");
    let plan = parse(&src, "t.toml", Path::new("/etc/holdfast")).expect("valid");
    let spec = &plan.services[&ServiceName::new("web").unwrap()];
    let section = super::export::program(spec, None, 100).expect("exports");
    let t = table(&section);
    let web = &t["service"]["web"];
    let command: Vec<String> = web["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(command, spec.command, "{section}");
    for (k, v) in &spec.env {
        assert_eq!(web["env"][k].as_str(), Some(v.as_str()), "{section}");
    }
}

#[test]
fn zero_startretries_becomes_the_smallest_start_limit_and_is_reported() {
    let imported = import(
        "[program:a]\ncommand=/bin/a\nstartretries=0\n",
        "t.conf",
        &ctx(),
    )
    .unwrap();
    let t: toml::Table = toml::from_str(&imported.toml).unwrap();
    assert_eq!(
        t["service"]["a"]["start_limit"]["burst"].as_integer(),
        Some(1)
    );
    assert_eq!(imported.report.len(), 1);
    assert_eq!(imported.report[0].line, 3);
    let plan = parse(&imported.toml, "t.toml", Path::new("/etc/holdfast"));
    assert!(plan.is_ok(), "holdfast accepts it");
}

#[test]
fn values_from_the_importing_shell_are_reported_and_a_passed_on_variable_is_inherited() {
    let imported = import(
        "[program:web]\ncommand=/bin/echo %(ENV_HOME)s\nenvironment=HOME=\"%(ENV_HOME)s\",DIR=%(ENV_HOME)s/x,HOMEY=%(ENV_HOME)s\n",
        "t.conf",
        &ctx(),
    )
    .unwrap();
    let t: toml::Table = toml::from_str(&imported.toml).unwrap();
    let env = t["service"]["web"]["env"].as_table().unwrap();
    assert!(!env.contains_key("HOME"), "{env:?}");
    assert_eq!(env["DIR"].as_str(), Some("/root/x"));
    assert_eq!(env["HOMEY"].as_str(), Some("/root"));
    let lines: Vec<String> = imported.report.iter().map(ToString::to_string).collect();
    let shell = |line: usize| {
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("line {line}:")) && l.contains("importing shell"))
            .count()
    };
    assert_eq!(shell(2), 1, "{lines:#?}");
    assert_eq!(shell(3), 2, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("HOME=%(ENV_HOME)s: inherited")),
        "{lines:#?}"
    );
}

#[test]
fn what_supervisord_hands_down_to_its_children_reaches_every_service() {
    let imported = import(
        "[supervisord]\nenvironment=SITE=\"a\",LANG=C\nminfds=4096\nminprocs=300\numask=027\ndirectory=/srv\nloglevel=debug\npidfile=/run/s.pid\n\
         [program:web]\ncommand=/bin/web\nenvironment=LANG=\"de\"\n[program:db]\ncommand=/bin/db\ndirectory=/var/db\numask=077\n",
        "t.conf",
        &ctx(),
    )
    .unwrap();
    let t: toml::Table = toml::from_str(&imported.toml).unwrap();
    let web = &t["service"]["web"];
    let db = &t["service"]["db"];
    assert_eq!(web["env"]["SITE"].as_str(), Some("a"));
    assert_eq!(
        web["env"]["LANG"].as_str(),
        Some("de"),
        "the program's own wins"
    );
    assert_eq!(db["env"]["LANG"].as_str(), Some("C"));
    assert_eq!(web["limits"]["nofile"].as_integer(), Some(4096));
    assert_eq!(db["limits"]["nproc"].as_integer(), Some(300));
    assert_eq!(web["umask"].as_str(), Some("0027"));
    assert_eq!(db["umask"].as_str(), Some("0077"));
    assert_eq!(web["working_dir"].as_str(), Some("/srv"));
    assert_eq!(db["working_dir"].as_str(), Some("/var/db"));
    let options: Vec<Option<&str>> = imported
        .report
        .iter()
        .filter(|f| f.section == "supervisord")
        .map(|f| f.option.as_deref())
        .collect();
    assert_eq!(options, [Some("loglevel"), Some("pidfile")]);
}

#[test]
fn unexpected_restarts_after_the_signals_on_failure_counts_as_clean() {
    let t = table("[program:a]\ncommand=/bin/a\n[program:b]\ncommand=/bin/b\nautorestart=true\n");
    for signal in ["SIGHUP", "SIGINT", "SIGTERM", "SIGPIPE"] {
        let action = &t["service"]["a"]["exit_codes"][signal]["action"];
        assert_eq!(action.as_str(), Some("restart"), "{signal}");
        assert!(t["service"]["b"].get("exit_codes").is_none());
    }
    let plan = parse(
        "[service.a]\ncommand = [\"/bin/a\"]\nuser = \"root\"\n[service.b]\ncommand = [\"/bin/b\"]\n",
        "t.toml",
        Path::new("/etc/holdfast"),
    )
    .expect("valid");
    let a = &plan.services[&ServiceName::new("a").unwrap()];
    let section = super::export::program(a, None, 100).unwrap();
    assert!(
        section.contains("does not restart after SIGHUP"),
        "{section}"
    );
    assert!(section.contains("supplementary_groups"), "{section}");
    // Imported back, the signals are restart actions: no note the second time.
    let back = table(&section);
    let text = toml::to_string(&back).unwrap();
    let plan = parse(&text, "t.toml", Path::new("/etc/holdfast")).expect("valid");
    let a = &plan.services[&ServiceName::new("a").unwrap()];
    let again = super::export::program(a, None, 100).unwrap();
    assert!(!again.contains("does not restart after"), "{again}");
    assert!(again.contains("exitcodes=0\n"), "{again}");
}

#[test]
fn a_default_service_comes_back_from_supervisord_with_the_same_start_limit() {
    let plan = parse(
        "[service.a]\ncommand = [\"/bin/a\"]\n",
        "t.toml",
        Path::new("/etc/holdfast"),
    )
    .expect("valid");
    let a = &plan.services[&ServiceName::new("a").unwrap()];
    let section = super::export::program(a, None, 100).unwrap();
    assert!(!section.contains("start_limit"), "{section}");
    let back = toml::to_string(&table(&section)).unwrap();
    let plan = parse(&back, "t.toml", Path::new("/etc/holdfast")).expect("valid");
    let again = &plan.services[&ServiceName::new("a").unwrap()];
    assert_eq!(again.start_limit, a.start_limit, "{back}");
    assert_eq!(again.start_secs, a.start_secs);
}

#[test]
fn a_duration_longer_than_holdfast_takes_is_an_error_not_a_config_check_refuses() {
    assert_eq!(
        error_line("[program:a]\ncommand=/bin/a\nstartsecs=9223372036854775807\n"),
        3
    );
    assert_eq!(
        error_line("[program:a]\ncommand=/bin/a\nstopwaitsecs=31536001\n"),
        3
    );
    let t = table("[program:a]\ncommand=/bin/a\nstartsecs=31536000\nstartretries=4294967295\n");
    let text = toml::to_string(&t).unwrap();
    assert!(
        parse(&text, "t.toml", Path::new("/etc/holdfast")).is_ok(),
        "{text}"
    );
}

#[test]
fn an_instance_offset_becomes_numprocs_start_and_two_offsets_are_refused() {
    let plan = parse(
        "[service.w]\ncommand = [\"/bin/w\", \"--port={instance + 8080}\"]\ninstances = 2\n",
        "t.toml",
        Path::new("/etc/holdfast"),
    )
    .expect("valid");
    let spec = &plan.services[&ServiceName::new("w@0").unwrap()];
    let template = |args: &[&str]| crate::interop::Template {
        count: 2,
        command: args.iter().map(|a| (*a).to_owned()).collect(),
        env: std::collections::BTreeMap::new(),
    };
    let t = template(&["/bin/w", "--port={instance + 8080}"]);
    let section = super::export::program(spec, Some(&t), 100).unwrap();
    assert!(section.contains("numprocs_start=8080\n"), "{section}");
    assert!(
        section.contains("command=/bin/w --port=%(process_num)d\n"),
        "{section}"
    );
    let back = table(&section);
    assert_eq!(
        back["service"]["w"]["command"][1].as_str(),
        Some("--port={instance+8080}")
    );
    let mixed = template(&["/bin/w", "{instance}", "{instance + 1}"]);
    assert!(super::export::program(spec, Some(&mixed), 100).is_err());
}
