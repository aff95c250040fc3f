// The constructs' behaviour on their own, beyond what the app (compared with the SAM
// template) uses: a rotation per secret, shared functions, what is refused, the bundling
// check and cdk-nag on a stack of them. Run by `npm test` (node's test runner).

import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { App, Duration, Stack, Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { AwsSolutionsChecks } from 'cdk-nag';
import { checkBootstrap, KeyturnCredentialsApi, KeyturnRotation } from '../lib';

const BINARIES = ['rotate-database', 'rotate-iam-key', 'issue-credentials', 'reap-leases'];

// A directory of bootstraps for one architecture: the first 20 bytes of an ELF header,
// which is what the bundling check reads.
function lambdaDir(machine: number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keyturn-cdk-test-'));
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  const header = Buffer.alloc(20);
  header.write('\x7fELF', 0, 'latin1');
  header[4] = 2; // 64-bit
  header[5] = 1; // little-endian
  header.writeUInt16LE(2, 16); // executable
  header.writeUInt16LE(machine, 18);
  for (const binary of BINARIES) {
    fs.mkdirSync(path.join(dir, binary));
    fs.writeFileSync(path.join(dir, binary, 'bootstrap'), header);
  }
  return dir;
}
const X86_64 = lambdaDir(0x3e);
const ARM64 = lambdaDir(0xb7);

function setup() {
  const app = new App();
  const stack = new Stack(app, 'Test');
  const vpc = new ec2.Vpc(stack, 'Vpc', { maxAzs: 2, natGateways: 0, subnetConfiguration: [{ name: 'db', subnetType: ec2.SubnetType.PRIVATE_ISOLATED }] });
  return { app, stack, vpc };
}

// Every statement of every inline policy of the role of the function named `name`.
function statementsOf(template: Template, name: string): any[] {
  const functions = template.findResources('AWS::Lambda::Function', { Properties: { FunctionName: name } });
  const [fn] = Object.values(functions);
  assert.ok(fn, `function ${name}`);
  const roleId = fn.Properties.Role['Fn::GetAtt'][0];
  const role = template.toJSON().Resources[roleId];
  return role.Properties.Policies.flatMap((p: any) => p.PolicyDocument.Statement);
}

const actionsOf = (statement: any): string[] => [statement.Action].flat();

test('a postgres secret on single-user rotation: its grants, its permission and its schedule', () => {
  const { stack, vpc } = setup();
  const key = new kms.Key(stack, 'Key');
  const secret = new secretsmanager.Secret(stack, 'Secret', { encryptionKey: key });
  new KeyturnRotation(stack, 'R', { secret, engine: 'postgres', strategy: 'single-user', vpc, lambdaDir: X86_64 });

  const template = Template.fromStack(stack);
  template.resourceCountIs('AWS::Lambda::Function', 1);
  template.resourceCountIs('AWS::IAM::Policy', 0);
  template.hasResourceProperties('AWS::Lambda::Function', {
    FunctionName: 'keyturn-database-single-user',
    Runtime: 'provided.al2023',
    Handler: 'bootstrap',
    Architectures: ['x86_64'],
    MemorySize: 128,
    Timeout: 30,
    Environment: { Variables: { KEYTURN_STRATEGY: 'single-user' } },
    VpcConfig: Match.objectLike({ SubnetIds: Match.anyValue() }),
    LoggingConfig: { LogFormat: 'JSON', ApplicationLogLevel: 'INFO', SystemLogLevel: 'WARN', LogGroup: Match.anyValue() },
  });

  const statements = statementsOf(template, 'keyturn-database-single-user');
  const rotate = statements.find((s) => actionsOf(s).includes('secretsmanager:PutSecretValue'));
  assert.deepEqual(actionsOf(rotate).sort(), [
    'secretsmanager:DescribeSecret',
    'secretsmanager:GetSecretValue',
    'secretsmanager:ListSecretVersionIds',
    'secretsmanager:PutSecretValue',
    'secretsmanager:UpdateSecretVersionStage',
  ]);
  assert.deepEqual(rotate.Resource, { Ref: stack.getLogicalId(secret.node.defaultChild as secretsmanager.CfnSecret) });
  const allowed = JSON.stringify(rotate.Condition.StringEquals['secretsmanager:resource/AllowRotationLambdaArn']);
  assert.match(allowed, /:function:keyturn-database-single-user/);
  const decrypt = statements.find((s) => actionsOf(s).includes('kms:Decrypt'));
  assert.deepEqual(actionsOf(decrypt).sort(), ['kms:Decrypt', 'kms:GenerateDataKey']);
  assert.ok(decrypt.Condition.StringEquals['kms:ViaService']);
  assert.deepEqual(decrypt.Condition.StringLike['kms:EncryptionContext:SecretARN'], rotate.Resource);
  // No other grant: no admin secret, no RDS, no IAM.
  assert.equal(statements.length, 2);

  template.hasResourceProperties('AWS::Lambda::Permission', {
    Principal: 'secretsmanager.amazonaws.com',
    Action: 'lambda:InvokeFunction',
    SourceArn: rotate.Resource,
    SourceAccount: { Ref: 'AWS::AccountId' },
  });
  template.hasResource('AWS::SecretsManager::RotationSchedule', {
    Properties: { SecretId: rotate.Resource, RotationRules: { ScheduleExpression: 'rate(30 days)' } },
    DependsOn: Match.arrayWith([Match.stringLikeRegexp('InvokePermission')]),
  });
});

test('rotations of one kind share one function; each grants only its own secret', () => {
  const { stack, vpc } = setup();
  const a = new secretsmanager.Secret(stack, 'A');
  const b = new secretsmanager.Secret(stack, 'B');
  // Imported by name: its ARN lacks the 6 characters Secrets Manager appends.
  const c = secretsmanager.Secret.fromSecretNameV2(stack, 'C', 'prod/app/mysql');
  new KeyturnRotation(stack, 'RA', { secret: a, engine: 'postgres', strategy: 'single-user', vpc, lambdaDir: X86_64 });
  new KeyturnRotation(stack, 'RB', { secret: b, engine: 'mariadb', strategy: 'single-user', vpc, lambdaDir: X86_64, schedule: Duration.hours(12) });
  new KeyturnRotation(stack, 'RC', { secret: c, engine: 'mysql', strategy: 'single-user', vpc, lambdaDir: X86_64, schedule: 'cron(0 4 ? * SUN *)', rotationWindow: Duration.hours(3) });

  const template = Template.fromStack(stack);
  template.resourceCountIs('AWS::Lambda::Function', 1);
  template.resourceCountIs('AWS::Lambda::Permission', 3);
  template.resourceCountIs('AWS::SecretsManager::RotationSchedule', 3);
  template.hasResourceProperties('AWS::SecretsManager::RotationSchedule', { RotationRules: { ScheduleExpression: 'rate(12 hours)' } });
  template.hasResourceProperties('AWS::SecretsManager::RotationSchedule', { RotationRules: { ScheduleExpression: 'cron(0 4 ? * SUN *)', Duration: '3h' } });
  const resources = statementsOf(template, 'keyturn-database-single-user').map((s) => JSON.stringify(s.Resource));
  assert.equal(resources.length, 3);
  assert.ok(resources.some((r) => r.includes('secret:prod/app/mysql-??????')), resources.join(' '));
  // No statement names more than its one secret.
  assert.ok(resources.every((r) => !r.includes('*')));
});

test('alternating-users reads its admin secret and nothing else, and lists it for the function', () => {
  const { stack, vpc } = setup();
  const key = new kms.Key(stack, 'Key');
  const admin = new secretsmanager.Secret(stack, 'Admin', { encryptionKey: key });
  const secret = new secretsmanager.Secret(stack, 'User');
  new KeyturnRotation(stack, 'R', { secret, engine: 'postgres', strategy: 'alternating-users', adminSecret: admin, vpc, lambdaDir: X86_64 });

  const template = Template.fromStack(stack);
  const statements = statementsOf(template, 'keyturn-database-alternating-users');
  const adminRef = { Ref: stack.getLogicalId(admin.node.defaultChild as secretsmanager.CfnSecret) };
  const read = statements.find((s) => actionsOf(s).length === 2 && actionsOf(s).includes('secretsmanager:GetSecretValue'));
  assert.deepEqual([read.Resource].flat(), [adminRef]);
  const rds = statements.find((s) => actionsOf(s).includes('rds:DescribeDBInstances'));
  assert.deepEqual(actionsOf(rds).sort(), ['rds:DescribeDBClusters', 'rds:DescribeDBInstances']);
  const decrypt = statements.find((s) => JSON.stringify(s).includes('kms:Decrypt'));
  assert.deepEqual(actionsOf(decrypt), ['kms:Decrypt']);
  assert.deepEqual([decrypt.Condition.StringEquals['kms:EncryptionContext:SecretARN']].flat(), [adminRef]);
  template.hasResourceProperties('AWS::Lambda::Function', {
    FunctionName: 'keyturn-database-alternating-users',
    Environment: { Variables: { KEYTURN_STRATEGY: 'alternating-users', KEYTURN_ADMIN_SECRET_ARNS: adminRef } },
  });
});

test('iam-key: users under its path, keyturn tags only, no VPC, no strategy', () => {
  const { stack } = setup();
  const secret = new secretsmanager.Secret(stack, 'Key');
  new KeyturnRotation(stack, 'R', { secret, engine: 'iam-key', iamUserPath: '/ci/', deactivatePreviousKey: true, lambdaDir: X86_64 });
  const template = Template.fromStack(stack);
  template.hasResourceProperties('AWS::Lambda::Function', {
    FunctionName: 'keyturn-iam-key',
    Timeout: 60,
    Environment: { Variables: { KEYTURN_IAM_PATH_PREFIX: '/ci/', KEYTURN_IAM_DEACTIVATE_PREVIOUS: 'true' } },
    VpcConfig: Match.absent(),
  });
  const statements = statementsOf(template, 'keyturn-iam-key');
  const all = statements.flatMap(actionsOf);
  assert.ok(!all.includes('secretsmanager:ListSecretVersionIds'));
  const tags = statements.find((s) => actionsOf(s).includes('iam:TagUser'));
  assert.deepEqual(tags.Condition['ForAllValues:StringLike']['aws:TagKeys'], ['AKIA*', 'keyturn-creating-key', 'keyturn-rotated']);
  assert.match(JSON.stringify(tags.Resource), /:user\/ci\/\*/);

  assert.throws(
    () => new KeyturnRotation(stack, 'R2', { secret, engine: 'iam-key', strategy: 'single-user', lambdaDir: X86_64 }),
    /has no strategy/,
  );
  const other = setup();
  assert.throws(
    () => new KeyturnRotation(other.stack, 'R', { secret: new secretsmanager.Secret(other.stack, 'K'), engine: 'iam-key', vpc: other.vpc, lambdaDir: X86_64 }),
    /outside any VPC/,
  );
  assert.throws(
    () => new KeyturnRotation(other.stack, 'R3', { secret: new secretsmanager.Secret(other.stack, 'K3'), engine: 'iam-key', iamUserPath: '/', lambdaDir: X86_64 }),
    /below the root/,
  );
});

test('refused: a database secret without strategy, alternating-users without admin, an admin by name, settings that disagree', () => {
  const { stack, vpc } = setup();
  const secret = new secretsmanager.Secret(stack, 'S');
  assert.throws(() => new KeyturnRotation(stack, 'A', { secret, engine: 'postgres', vpc, lambdaDir: X86_64 }), /needs a strategy/);
  assert.throws(
    () => new KeyturnRotation(stack, 'B', { secret, engine: 'postgres', strategy: 'alternating-users', vpc, lambdaDir: X86_64 }),
    /admin secret/,
  );
  const byName = secretsmanager.Secret.fromSecretNameV2(stack, 'Admin', 'prod/admin');
  assert.throws(
    () => new KeyturnRotation(stack, 'C', { secret, engine: 'postgres', strategy: 'alternating-users', adminSecret: byName, vpc, lambdaDir: X86_64 }),
    /full ARN/,
  );
  assert.throws(
    () => new KeyturnRotation(stack, 'D', { secret, secretNamePattern: 'prod/*', engine: 'postgres', strategy: 'single-user', vpc, lambdaDir: X86_64 }),
    /exactly one of secret and secretNamePattern/,
  );
  assert.throws(
    () => new KeyturnRotation(stack, 'E', { secret, engine: 'postgres', strategy: 'single-user', vpc, lambdaDir: X86_64, schedule: Duration.hours(2) }),
    /4 to 23 hours/,
  );
  new KeyturnRotation(stack, 'F', { secret, engine: 'postgres', strategy: 'single-user', vpc, lambdaDir: X86_64 });
  assert.throws(
    () =>
      new KeyturnRotation(stack, 'G', {
        secret: new secretsmanager.Secret(stack, 'S2'),
        engine: 'postgres',
        strategy: 'single-user',
        vpc,
        lambdaDir: ARM64,
        architecture: lambda.Architecture.ARM_64,
      }),
    /shared by every rotation/,
  );
});

test('the prebuilt binary must exist, be ELF, and be built for the function architecture', () => {
  const file = path.join(X86_64, 'rotate-database', 'bootstrap');
  assert.equal(checkBootstrap(file, lambda.Architecture.X86_64), undefined);
  assert.match(checkBootstrap(file, lambda.Architecture.ARM_64) ?? '', /not built for arm64/);
  assert.match(checkBootstrap(path.join(X86_64, 'nothing', 'bootstrap'), lambda.Architecture.X86_64) ?? '', /not found/);
  const text = path.join(X86_64, 'rotate-database', 'script');
  fs.writeFileSync(text, '#!/bin/sh\necho placeholder\n');
  assert.match(checkBootstrap(text, lambda.Architecture.X86_64) ?? '', /not an ELF executable/);

  const { stack, vpc } = setup();
  const secret = new secretsmanager.Secret(stack, 'S');
  assert.throws(
    () => new KeyturnRotation(stack, 'R', { secret, engine: 'postgres', strategy: 'single-user', vpc, lambdaDir: X86_64, architecture: lambda.Architecture.ARM_64 }),
    /not built for arm64/,
  );
});

test('the credentials API: five routes, each with IAM authorization; grants follow the props', () => {
  const { stack, vpc } = setup();
  const admin = new secretsmanager.Secret(stack, 'Admin');
  const api = new KeyturnCredentialsApi(stack, 'Api', {
    vpc,
    lambdaDir: X86_64,
    rolesFile: path.join(__dirname, '..', '..', '..', 'roles.example.toml'),
    leaseAdminSecrets: [admin],
  });
  const template = Template.fromStack(stack);
  template.resourceCountIs('AWS::IAM::Policy', 0);
  const body = (api.api.body as any).paths;
  const routes = Object.entries(body).flatMap(([p, methods]: [string, any]) =>
    Object.entries(methods).map(([m, op]: [string, any]) => ({ route: `${m.toUpperCase()} ${p}`, security: op.security })),
  );
  assert.deepEqual(routes.map((r) => r.route).sort(), [
    'DELETE /v1/leases/{lease_id}',
    'GET /v1/leases',
    'GET /v1/roles',
    'POST /v1/credentials/{role}',
    'POST /v1/leases/{lease_id}/renew',
  ]);
  assert.ok(routes.every((r) => JSON.stringify(r.security) === '[{"AWS_IAM":[]}]'));
  template.resourceCountIs('AWS::Lambda::Permission', 5);
  template.hasResource('AWS::DynamoDB::Table', {
    DeletionPolicy: 'Retain',
    UpdateReplacePolicy: 'Retain',
    Properties: Match.objectLike({ DeletionProtectionEnabled: true, PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true } }),
  });
  // Without aws-iam-user, aws-sts or rds-iam-token roles: no IAM, STS or rds-db action.
  for (const name of ['keyturn-issue-credentials', 'keyturn-reap-leases']) {
    const actions = statementsOf(template, name).flatMap(actionsOf);
    assert.ok(actions.includes('secretsmanager:GetSecretValue'));
    assert.ok(!actions.some((a) => /^(iam|sts|rds-db):/.test(a)), `${name}: ${actions.join(' ')}`);
    assert.ok(!actions.some((a) => a === 'dynamodb:Scan' || a === 'dynamodb:DeleteItem'), name);
  }
});

test('cdk-nag finds nothing unacknowledged in a stack of per-secret rotations and the API', () => {
  const { app, stack, vpc } = setup();
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  const key = new kms.Key(stack, 'Key', { enableKeyRotation: true });
  const admin = new secretsmanager.Secret(stack, 'Admin', { encryptionKey: key });
  const user = new secretsmanager.Secret(stack, 'User', { encryptionKey: key });
  const iamKey = new secretsmanager.Secret(stack, 'IamKey');
  for (const secret of [admin, user, iamKey]) {
    // The test's own secrets, not keyturn's: rotated here by keyturn, not by the rule's hosted rotation.
    Validations.of(secret).acknowledge({ id: 'AwsSolutions-SMG4', reason: 'Rotated by KeyturnRotation in this test.' });
  }
  new KeyturnRotation(stack, 'Admin-rotation', { secret: admin, engine: 'postgres', strategy: 'single-user', vpc, lambdaDir: X86_64 });
  new KeyturnRotation(stack, 'User-rotation', { secret: user, engine: 'postgres', strategy: 'alternating-users', adminSecret: admin, vpc, lambdaDir: X86_64 });
  new KeyturnRotation(stack, 'Key-rotation', { secret: iamKey, engine: 'iam-key', lambdaDir: X86_64 });
  new KeyturnCredentialsApi(stack, 'Api', {
    vpc,
    lambdaDir: X86_64,
    rolesFile: path.join(__dirname, '..', '..', '..', 'roles.example.toml'),
    leaseAdminSecrets: [admin],
    leaseIamUsers: { permissionsBoundary: iam.ManagedPolicy.fromManagedPolicyName(stack, 'Boundary', 'keyturn-lease-boundary') },
  });
  for (const flowLogs of [vpc]) {
    Validations.of(flowLogs).acknowledge({ id: 'AwsSolutions-VPC7', reason: "The test's own VPC, not keyturn's." });
  }
  app.synth();
});
