//! A MariaDB server whose global sql_mode is ANSI (or ORACLE, MSSQL, DB2, POSTGRESQL,
//! MAXDB: combinations that include ANSI_QUOTES) would print identifiers in double quotes,
//! without backslash escapes; read with string rules a role `x\ole` becomes `xole`, and
//! the clone would get another role. keyturn's sessions set a fixed sql_mode, and the grant
//! parser refuses double-quoted text. On a MariaDB server of its own: it changes the
//! server's global sql_mode, which the other tests of the process must not see.

use keyturn::backend::mysql::grants::identifier;
use keyturn::backend::mysql::literal;
use keyturn::rotation::database::Strategy;
use keyturn_tests::{random_token, TestEnv};
use mysql_async::prelude::Queryable;
use serde_json::json;

#[tokio::test]
async fn under_a_global_ansi_sql_mode_the_clone_gets_the_same_role() {
    let env = TestEnv::new("rvansi").await.with_mariadb_of_its_own(module_path!());
    let rotator = env.rotator(Strategy::AlternatingUsers);
    let user = env.unique("app");
    let password = random_token();
    env.create_mariadb_account(&user, &password, "").await;
    let granted = format!("{user}_r\\ole"); // the role the original has: r, backslash, o, l, e
    let other = format!("{user}_role"); // a stronger role the original does NOT have
    let mut a = env.mariadb_admin().await;
    for sql in [
        format!("CREATE ROLE {}", identifier(&granted)),
        format!("CREATE ROLE {}", identifier(&other)),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON *.* TO {}", identifier(&other)),
        format!("GRANT {} TO {}@'%'", identifier(&granted), literal(&user)),
    ] {
        a.query_drop(sql).await.expect("set up");
    }
    drop(a);
    // What a DBA sets in my.cnf or RDS's parameter group (sql_mode=ANSI), or for Oracle
    // compatibility: the server's superuser's to set, not the admin's.
    env.mariadb_root().await.query_drop("SET GLOBAL sql_mode = 'ANSI'").await.expect("set the global sql_mode");
    let admin_arn = env.create_secret("admin", &env.mariadb_admin_secret()).await;
    let mut value = env.mariadb_secret(&user, &password);
    value["masterarn"] = json!(admin_arn);
    let arn = env.create_secret("app", &value).await;
    let token = env.start_rotation(&arn).await;
    let mut outcome = Ok(());
    for step in [keyturn::rotation::Step::Create, keyturn::rotation::Step::Set] {
        if let Err(e) = env.step(&rotator, &arn, &token, step).await {
            outcome = Err(e.to_string());
            break;
        }
    }
    let mut a = env.mariadb_root().await;
    a.query_drop("SET GLOBAL sql_mode = DEFAULT").await.unwrap();
    a.query_drop("SET SESSION sql_mode = DEFAULT").await.unwrap();
    let clone = format!("{user}_clone");
    let grants: Vec<String> = a.query(format!("SHOW GRANTS FOR {}@'%'", literal(&clone))).await.unwrap_or_default();
    assert_eq!(outcome, Ok(()), "setSecret");
    assert!(
        grants.iter().any(|g| g.contains(&format!("GRANT {} TO", identifier(&granted)))),
        "the clone lacks {granted:?}: {grants:#?}"
    );
    assert!(
        !grants.iter().any(|g| g.contains(&format!("GRANT {} TO", identifier(&other)))),
        "the clone was granted {other:?}, a role the original does not have: {grants:#?}"
    );
}
