//! The sample events under events/ are what the functions accept, and the SAM template is
//! valid CloudFormation (cfn-lint, from the project's venv).

use keyturn::rotation::{RotationEvent, Step};

#[test]
fn sample_rotation_events_parse() {
    for function in ["rotate-database", "rotate-iam-key"] {
        let dir = keyturn_tests::project_root().join("events").join(function);
        for (file, step) in [
            ("createSecret.json", Step::Create),
            ("setSecret.json", Step::Set),
            ("testSecret.json", Step::Test),
            ("finishSecret.json", Step::Finish),
        ] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            let event = RotationEvent::from_value(value).unwrap_or_else(|e| panic!("{function}/{file}: {e}"));
            assert_eq!(event.step, step, "{function}/{file}");
        }
    }
}

#[test]
fn sam_template_passes_cfn_lint() {
    let root = keyturn_tests::project_root();
    let out = std::process::Command::new(keyturn_tests::moto::venv().join("bin/cfn-lint"))
        .arg(root.join("infra/template.yaml"))
        .output()
        .expect("run cfn-lint (make setup installs it with moto)");
    assert!(
        out.status.success(),
        "cfn-lint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
