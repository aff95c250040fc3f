#!/usr/bin/env node
//! The CDK app: one stack equivalent to infra/template.yaml, its parameters read from CDK
//! context under the same names in camelCase (`-c secretNamePattern=prod/*`). cdk.json's
//! context holds placeholder values that turn every optional part on (what the comparison
//! with the SAM template synthesizes); an empty value turns its part off, as an empty SAM
//! parameter does. cdk-nag's AwsSolutions checks run on every synth.

import * as path from 'node:path';
import { App, Aws, CfnOutput, Duration, Stack, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import { AwsSolutionsChecks } from 'cdk-nag';
import { KeyturnAlarms } from '../lib/alarms';
import { KeyturnVpcEndpoints } from '../lib/network';
import { KeyturnCredentialsApi } from '../lib/credentials-api';
import { KeyturnRotation } from '../lib/rotation';

const app = new App();

// A context value: a string (-c) or whatever cdk.json holds; empty means absent.
function text(key: string): string | undefined {
  const value = app.node.tryGetContext(key);
  if (value === undefined || value === null || value === '') {
    return undefined;
  }
  return String(value);
}
function list(key: string): string[] {
  const value = app.node.tryGetContext(key);
  const items = Array.isArray(value) ? value.map(String) : String(value ?? '').split(',');
  return items.map((item) => item.trim()).filter((item) => item !== '');
}
function required(key: string): string {
  const value = text(key);
  if (value === undefined) {
    throw new Error(`keyturn: context ${key} is required (-c ${key}=...)`);
  }
  return value;
}
// A switch: "true" or "false" (default `fallback`), as the template's EnableRotation.
function enabled(key: string, fallback = 'true'): boolean {
  const value = text(key) ?? fallback;
  if (value !== 'true' && value !== 'false') {
    throw new Error(`keyturn: context ${key} is true or false, not ${value}`);
  }
  return value === 'true';
}
function number(key: string, fallback: number): number {
  const value = text(key);
  if (value === undefined) {
    return fallback;
  }
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`keyturn: context ${key} must be a whole number of at least 1, not ${value}`);
  }
  return n;
}

// The two halves, as the template's EnableRotation and EnableDynamicCredentials.
const rotationEnabled = enabled('enableRotation');
const dynamicCredentialsEnabled = enabled('enableDynamicCredentials');
if (!rotationEnabled && !dynamicCredentialsEnabled) {
  throw new Error('keyturn: context enableRotation and enableDynamicCredentials cannot both be false');
}

const account = text('account');
const region = text('region');
const stack = new Stack(app, text('stackName') ?? 'keyturn', {
  description:
    'keyturn: rotation of PostgreSQL, MySQL, MariaDB and IAM key secrets, and dynamic credentials behind an IAM-authorized API (CDK)',
  // Env-agnostic unless given: one template for any account and region, as SAM's.
  env: account || region ? { account, region } : undefined,
});

const logRetention = number('logRetentionDays', 365);
if (!(Object.values(logs.RetentionDays) as number[]).includes(logRetention)) {
  throw new Error(`keyturn: context logRetentionDays is one of CloudWatch Logs' retention periods (1, 3, 5, 7, 14, 30, ...), not ${logRetention}`);
}
const functionOptions = {
  functionNamePrefix: text('functionNamePrefix'),
  logRetention: logRetention as logs.RetentionDays,
  architecture: text('architecture') === 'arm64' ? lambda.Architecture.ARM_64 : lambda.Architecture.X86_64,
  secretsManagerEndpoint: text('secretsManagerEndpoint'),
};
if (!['x86_64', 'arm64', undefined].includes(text('architecture'))) {
  throw new Error(`keyturn: context architecture is x86_64 or arm64, not ${text('architecture')}`);
}

// The functions' network. The template takes subnets and security groups; a VPC construct
// needs its id too, which is in no resource the stack creates.
const vpc = ec2.Vpc.fromVpcAttributes(stack, 'Vpc', { vpcId: required('vpcId'), availabilityZones: [Stack.of(stack).availabilityZones[0]] });
const subnets = list('subnetIds').map((id, i) => ec2.Subnet.fromSubnetId(stack, `Subnet${i}`, id));
for (const subnet of subnets) {
  Validations.of(subnet).acknowledge({
    id: 'Annotation::@aws-cdk/aws-ec2:noSubnetRouteTableId',
    reason: "Only the subnets' ids are used (the functions' VpcConfig); nothing reads their route tables.",
  });
}
const network = {
  vpc,
  vpcSubnets: { subnets },
  securityGroups: list('securityGroupIds').map((id, i) => ec2.SecurityGroup.fromSecurityGroupId(stack, `SecurityGroup${i}`, id)),
};
if (network.vpcSubnets.subnets.length === 0 || network.securityGroups.length === 0) {
  throw new Error('keyturn: context subnetIds and securityGroupIds are required');
}

// The secrets' customer managed keys: kmsKeyArns, and kmsKeyArn (one key, kept for stacks
// that set it), as the template's KmsKeyArns and KmsKeyArn.
const kmsKeyArn = text('kmsKeyArn');
const encryptionKeys = [...(kmsKeyArn ? [kmsKeyArn] : []), ...list('kmsKeyArns')].map((arn, i) =>
  kms.Key.fromKeyArn(stack, i === 0 ? 'SecretsKey' : `SecretsKey${i}`, arn),
);
const secretsByArn = (key: string) =>
  list(key).map((arn, i) => secretsmanager.Secret.fromSecretCompleteArn(stack, `${key}${i}`, arn));

// The three rotation functions, as the template: each may rotate the secrets
// secretNamePattern names whose rotation is configured to it. (The engine only picks
// rotate-database, which reads each secret's engine from the secret.)
const secretNamePattern = text('secretNamePattern') ?? '*';
const rotations = rotationEnabled ? {
  'database-single-user': new KeyturnRotation(stack, 'SingleUser', {
    ...functionOptions,
    ...network,
    secretNamePattern,
    engine: 'postgres',
    strategy: 'single-user',
    encryptionKeys,
  }),
  'database-alternating-users': new KeyturnRotation(stack, 'AlternatingUsers', {
    ...functionOptions,
    ...network,
    secretNamePattern,
    engine: 'postgres',
    strategy: 'alternating-users',
    adminSecrets: secretsByArn('masterSecretArns'),
    encryptionKeys,
  }),
  'iam-key': new KeyturnRotation(stack, 'IamKey', {
    ...functionOptions,
    secretNamePattern,
    engine: 'iam-key',
    iamUserPath: text('iamUserPath'),
    deactivatePreviousKey: text('deactivatePreviousKey') === 'true',
    encryptionKeys,
  }),
} : undefined;

// Optional: one existing secret put on a schedule here.
const rotatedSecretArn = text('rotatedSecretArn');
if (rotations && rotatedSecretArn) {
  const which = text('rotatedSecretFunction') ?? 'database-single-user';
  const rotation = rotations[which as keyof typeof rotations];
  if (!rotation) {
    throw new Error(`keyturn: context rotatedSecretFunction is one of ${Object.keys(rotations).join(', ')}, not ${which}`);
  }
  const window = text('rotationWindow') ?? '4h';
  const hours = /^(\d{1,2})h$/.exec(window);
  if (!hours) {
    throw new Error(`keyturn: context rotationWindow is Nh (1h to 24h), not ${window}`);
  }
  rotation.scheduleRotation('RotatedSecretSchedule', secretsmanager.Secret.fromSecretCompleteArn(stack, 'RotatedSecret', rotatedSecretArn), {
    schedule: text('rotationScheduleExpression') ?? 'rate(30 days)',
    rotationWindow: Duration.hours(Number(hours[1])),
  });
}

const boundaryArn = text('leaseIamUserBoundaryArn');
// The roles layer: one published already (rolesLayerArn), or built from rolesFile (default
// infra/roles.toml, which has no role), as the template's RolesLayerArn and ROLES_FILE.
const rolesLayerArn = text('rolesLayerArn');
const credentials = dynamicCredentialsEnabled ? new KeyturnCredentialsApi(stack, 'Credentials', {
  ...functionOptions,
  ...network,
  ...(rolesLayerArn
    ? { rolesLayer: lambda.LayerVersion.fromLayerVersionArn(stack, 'RolesLayer', rolesLayerArn) }
    : { rolesFile: text('rolesFile') ?? path.join(__dirname, '..', '..', '..', 'roles.toml') }),
  leaseAdminSecrets: secretsByArn('leaseAdminSecretArns'),
  encryptionKeys,
  leaseIamUsers: boundaryArn
    ? {
        path: text('leaseIamUserPath'),
        permissionsBoundary: iam.ManagedPolicy.fromManagedPolicyArn(stack, 'LeaseIamUserBoundary', boundaryArn),
        groups: list('leaseIamGroupArns').map((arn, i) => iam.Group.fromGroupArn(stack, `LeaseIamGroup${i}`, arn)),
      }
    : undefined,
  assumableRoles: list('leaseAssumableRoleArns').map((arn, i) => iam.Role.fromRoleArn(stack, `LeaseAssumableRole${i}`, arn, { mutable: false })),
  rdsDbUserArns: list('leaseRdsDbUserArns'),
  apiRateLimit: number('apiRateLimit', 10),
  apiBurstLimit: number('apiBurstLimit', 20),
}) : undefined;

// Optional: the VPC endpoints the functions need, as the template's CreateVpcEndpoints.
if (enabled('createVpcEndpoints', 'false')) {
  new KeyturnVpcEndpoints(stack, 'Endpoints', {
    functionNamePrefix: functionOptions.functionNamePrefix,
    vpc,
    subnets,
    functionSecurityGroups: network.securityGroups,
    dynamicCredentials: dynamicCredentialsEnabled,
    routeTableIds: list('routeTableIds'),
  });
}

// Failures that reach someone: alarms on each function and on the reaper, and the
// RotationFailed rule for the secrets of secretNamePattern, to alarmTopicArn or a topic of
// the stack's own.
const alarmTopicArn = text('alarmTopicArn');
const alarms = new KeyturnAlarms(stack, 'Alarms', {
  functionNamePrefix: functionOptions.functionNamePrefix,
  topic: alarmTopicArn ? sns.Topic.fromTopicArn(stack, 'AlarmTopic', alarmTopicArn) : undefined,
  rotationFunctions: rotations ? Object.values(rotations).map((rotation) => rotation.rotationFunction) : undefined,
  secretNamePattern: rotations ? secretNamePattern : undefined,
  credentials,
});

if (rotations) {
  new CfnOutput(stack, 'SingleUserFunctionArn', {
    exportName: `${Aws.STACK_NAME}-SingleUserFunctionArn`,
    description: 'RotationLambdaARN for secrets rotated by their own user.',
    value: rotations['database-single-user'].rotationFunction.function.functionArn,
  });
  new CfnOutput(stack, 'AlternatingUsersFunctionArn', {
    exportName: `${Aws.STACK_NAME}-AlternatingUsersFunctionArn`,
    description: 'RotationLambdaARN for secrets with a masterarn (user and user_clone alternate).',
    value: rotations['database-alternating-users'].rotationFunction.function.functionArn,
  });
  new CfnOutput(stack, 'IamKeyFunctionArn', {
    exportName: `${Aws.STACK_NAME}-IamKeyFunctionArn`,
    description: 'RotationLambdaARN for IAM access key secrets ({"username", "accessKeyId", "secretAccessKey"}).',
    value: rotations['iam-key'].rotationFunction.function.functionArn,
  });
}
if (credentials) {
  new CfnOutput(stack, 'CredentialsApiUrl', {
    exportName: `${Aws.STACK_NAME}-CredentialsApiUrl`,
    description:
      'Base URL of the credentials API (POST /v1/credentials/{role}, POST /v1/leases/{lease_id}/renew, DELETE /v1/leases/{lease_id}, GET /v1/roles, GET /v1/leases); SigV4, service execute-api.',
    value: credentials.apiUrl,
  });
  new CfnOutput(stack, 'CredentialsApiInvokeArn', {
    exportName: `${Aws.STACK_NAME}-CredentialsApiInvokeArn`,
    description: 'Prefix of the execute-api:Invoke resources to grant callers, such as <prefix>/POST/v1/credentials/ci-reader.',
    value: credentials.invokeArnPrefix,
  });
  new CfnOutput(stack, 'LeaseTableName', {
    exportName: `${Aws.STACK_NAME}-LeaseTableName`,
    description: 'The lease table (the audit record of issued credentials; retained on stack deletion).',
    value: credentials.leaseTable.tableName,
  });
  new CfnOutput(stack, 'IssueCredentialsFunctionArn', {
    exportName: `${Aws.STACK_NAME}-IssueCredentialsFunctionArn`,
    description:
      'issue-credentials, which only API Gateway should invoke: whoever may call lambda:InvokeFunction on it can present any caller; deny that to every principal (docs/security.md).',
    value: credentials.issueFunction.functionArn,
  });
  new CfnOutput(stack, 'RolesLayerVersionArn', {
    exportName: `${Aws.STACK_NAME}-RolesLayerVersionArn`,
    description: "The roles layer version both dynamic-credential functions run with (RolesLayerArn, or the stack's own).",
    value: credentials.rolesLayer.layerVersionArn,
  });
}
new CfnOutput(stack, 'AlarmTopicArn', {
  exportName: `${Aws.STACK_NAME}-AlarmTopicArn`,
  description: "The SNS topic the alarms and the RotationFailed rule notify (AlarmTopicArn, or the stack's own); subscribe to it.",
  value: alarms.topic.topicArn,
});

// cdk-nag 3 runs as a CDK validation plugin: a finding not acknowledged fails the synth.
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
