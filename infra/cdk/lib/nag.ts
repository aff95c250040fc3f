//! Acknowledging cdk-nag findings that are deliberate, each with its reason beside it.

import { Stack, Validations } from 'aws-cdk-lib';
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
