//! The findings of cdk-nag, checkov and cfn-lint that are deliberate, each acknowledged or
//! skipped with its reason beside it (for checkov and cfn-lint, as infra/template.yaml's
//! Metadata skips them on the same resources).

import { CfnResource, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
// cdk-nag names a finding by the flattened form of the resource or policy it is about; this
// is its own flattening (the version is pinned exactly in package.json).
import { flattenCfnReference } from 'cdk-nag/lib/utils/flatten-cfn-reference';
import { IConstruct } from 'constructs';

function flat(scope: IConstruct, value: string): string {
  return flattenCfnReference(Stack.of(scope).resolve(value));
}

/** AwsSolutions-IAM5 for one wildcard resource of `role`'s policies. */
export function acknowledgeWildcardResource(role: IConstruct, resource: string, reason: string): void {
  Validations.of(role).acknowledge({ id: `AwsSolutions-IAM5[Resource::${flat(role, resource)}]`, reason });
}

/** AwsSolutions-IAM4 for one AWS managed policy of `role`. */
export function acknowledgeManagedPolicy(role: IConstruct, policy: iam.IManagedPolicy, reason: string): void {
  Validations.of(role).acknowledge({ id: `AwsSolutions-IAM4[Policy::${flat(role, policy.managedPolicyArn)}]`, reason });
}

/** A check skipped on one resource, and why. */
export interface LintSkip {
  readonly id: string;
  readonly comment: string;
}

/**
 * Skips checkov checks (with their comments, which checkov reports) and cfn-lint checks
 * (whose metadata has no comment: the reason is beside the call) on one resource.
 */
export function skipLinters(resource: CfnResource, checkov: LintSkip[], cfnLint: string[] = []): void {
  if (checkov.length > 0) {
    resource.addMetadata('checkov', { skip: checkov });
  }
  if (cfnLint.length > 0) {
    resource.addMetadata('cfn-lint', { config: { ignore_checks: cfnLint } });
  }
}

/** checkov's CKV_AWS_158 on a log group: CloudWatch Logs' own encryption, no KMS key. */
export const LOGS_NOT_KMS: LintSkip = {
  id: 'CKV_AWS_158',
  comment: 'keyturn never logs a secret (tested at TRACE); CloudWatch Logs encrypts every log group at rest',
};

/** checkov's CKV_AWS_173 on a function: its environment holds no secret. */
export const ENVIRONMENT_NO_SECRET: LintSkip = {
  id: 'CKV_AWS_173',
  comment: 'its environment holds names and ARNs, no secret; Lambda encrypts it at rest',
};
