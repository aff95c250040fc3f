//! `--stack NAME`: the API's URL from the deployed stack's `CredentialsApiUrl` output
//! (CloudFormation `DescribeStacks`, in the caller's region, as the caller); [`describe`]
//! also serves `roles deploy` and `roles-check --stack`, which read its parameters.

use aws_sdk_cloudformation::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_cloudformation::types::{Output, Stack};

use crate::api::{printable, CliError};

/// The stack output that holds the API's URL (infra/template.yaml's `Outputs`).
pub const API_URL_OUTPUT: &str = "CredentialsApiUrl";

/// The value of [`API_URL_OUTPUT`] among `outputs` of stack `stack`.
pub fn api_url_of(stack: &str, outputs: &[Output]) -> Result<String, CliError> {
    outputs
        .iter()
        .find(|o| o.output_key() == Some(API_URL_OUTPUT))
        .and_then(Output::output_value)
        .map(str::to_owned)
        .ok_or_else(|| {
            CliError::NotFound(format!(
                "stack {:?} has no {API_URL_OUTPUT} output: is it a keyturn stack?",
                printable(stack)
            ))
        })
}

/// Reads stack `stack`'s API URL.
pub async fn api_url(sdk: &aws_config::SdkConfig, stack: &str) -> Result<String, CliError> {
    let found = describe(sdk, stack).await?;
    api_url_of(stack, found.outputs())
}

/// Stack `stack` as DescribeStacks gives it: its outputs, parameters, status and id.
pub async fn describe(sdk: &aws_config::SdkConfig, stack: &str) -> Result<Stack, CliError> {
    let client = aws_sdk_cloudformation::Client::new(sdk);
    let answer = client.describe_stacks().stack_name(stack).send().await.map_err(|e| {
        let what = format!("cannot read stack {:?}", printable(stack));
        match &e {
            // CloudFormation's answer for a stack that does not exist (or was deleted).
            SdkError::ServiceError(s) if s.err().code() == Some("ValidationError") => {
                CliError::NotFound(format!("{what}: {}", printable(s.err().message().unwrap_or("no such stack"))))
            }
            SdkError::ServiceError(s) if matches!(s.err().code(), Some("AccessDenied" | "AccessDeniedException")) => {
                CliError::Auth(format!("{what}: {}", printable(s.err().message().unwrap_or("access denied"))))
            }
            _ => CliError::Server(format!("{what}: {}", DisplayErrorContext(&e))),
        }
    })?;
    answer
        .stacks
        .and_then(|stacks| stacks.into_iter().next())
        .ok_or_else(|| CliError::NotFound(format!("stack {:?} does not exist", printable(stack))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_the_named_output_and_its_absence_says_so() {
        let output = |k: &str, v: &str| Output::builder().output_key(k).output_value(v).build();
        let outputs = [output("RotateDatabaseArn", "arn:x"), output(API_URL_OUTPUT, "https://a.example")];
        assert_eq!(api_url_of("s", &outputs).unwrap(), "https://a.example");
        let e = api_url_of("other", &outputs[..1]).unwrap_err();
        assert_eq!(e.exit_code(), 4);
        assert!(e.to_string().contains("\"other\" has no CredentialsApiUrl output"), "{e}");
    }
}
