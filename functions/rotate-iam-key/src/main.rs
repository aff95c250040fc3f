//! rotate-iam-key: the Secrets Manager rotation function for IAM access keys.
//!
//! `main` reads configuration and builds the Secrets Manager, IAM and STS clients once per
//! container (`keyturn::app::rotate_iam_key::build`, which the tests also use); each
//! invocation only borrows them.

use keyturn::config::RotateIamKeyConfig;
use keyturn::telemetry::cannot_start;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    keyturn::telemetry::init();
    let config = RotateIamKeyConfig::from_env().map_err(cannot_start)?;
    let sdk = aws_config::load_from_env().await;
    let rotator = &keyturn::app::rotate_iam_key::build(&config, &sdk);
    keyturn::lambda::serve_rotation(rotator).await
}
