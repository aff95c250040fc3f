//! KeyturnCredentialsApi: keyturn's dynamic credentials, as infra/template.yaml deploys
//! them: issue-credentials behind an IAM-authorized HTTP API, reap-leases every minute on
//! EventBridge Scheduler, the lease table, and the roles file as a layer, each function
//! granted what the roles' kinds need and nothing more.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ArnFormat, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import {
  defaultKeysOf,
  keyturnFunction,
  KeyturnFunctionOptions,
  KeyturnNetworkProps,
  keyturnRole,
  prefixOf,
  secretsByKeys,
} from './function';
import { acknowledgeWildcardResource, ENVIRONMENT_NO_SECRET, skipLinters } from './nag';

/** The aws-iam-user roles' users. */
export interface LeaseIamUsersProps {
  /**
   * The roles' `path`: the only IAM users issue-credentials may create and change and
   * reap-leases may delete. Keep it apart from KeyturnRotation's iamUserPath.
   *
   * @default '/keyturn-leases/'
   */
  readonly path?: string;
  /** The roles' `permissions_boundary`: users are created, and given policies, with exactly it. */
  readonly permissionsBoundary: iam.IManagedPolicy;
  /**
   * The roles' `groups`: the only groups issue-credentials may add users to.
   *
   * @default - none
   */
  readonly groups?: iam.IGroup[];
}

export interface KeyturnCredentialsApiProps extends KeyturnFunctionOptions, KeyturnNetworkProps {
  /**
   * The roles file, mounted by both functions at /opt/roles.toml from a layer of the
   * stack's own. Exactly one of `rolesFile` and `rolesLayer`.
   */
  readonly rolesFile?: string;
  /**
   * A roles layer version published already (`keyturn roles deploy`), which both functions
   * run with instead of a layer built from `rolesFile`.
   */
  readonly rolesLayer?: lambda.ILayerVersion;
  /**
   * The admin secrets the roles name (`admin_secret`), with their full ARNs: the only secrets
   * the two functions may read.
   *
   * @default - none: every request for database credentials fails
   */
  readonly leaseAdminSecrets?: secretsmanager.ISecret[];
  /**
   * The customer managed key of admin secrets that do not name their own.
   *
   * @default - each secret's own `encryptionKey`, else none
   */
  readonly encryptionKey?: kms.IKey;
  /**
   * More customer managed keys of admin secrets that do not name their own (any of them,
   * besides `encryptionKey`).
   *
   * @default - none
   */
  readonly encryptionKeys?: kms.IKey[];
  /**
   * aws-iam-user roles: their path, boundary and groups.
   *
   * @default - none: no aws-iam-user role can issue
   */
  readonly leaseIamUsers?: LeaseIamUsersProps;
  /**
   * The roles the aws-sts roles assume (`role_arn`). Each role's trust policy must also allow
   * the issuer's role sts:AssumeRole and sts:TagSession.
   *
   * @default - none
   */
  readonly assumableRoles?: iam.IRole[];
  /**
   * rds-db:connect resources (arn:aws:rds-db:REGION:ACCOUNT:dbuser:RESOURCE_ID/DB_USER) of the
   * rds-iam-token roles.
   *
   * @default - none
   */
  readonly rdsDbUserArns?: string[];
  /**
   * Requests per second each route accepts, over all callers (each issue opens an admin
   * session to a database).
   *
   * @default 10
   */
  readonly apiRateLimit?: number;
  /**
   * Burst of requests each route accepts above apiRateLimit.
   *
   * @default 20
   */
  readonly apiBurstLimit?: number;
}

// The user-deletion actions both functions need: revocation and the orphan sweep take
// everything from a user under the lease path, then delete it.
const DELETE_LEASE_IAM_USER_ACTIONS = [
  'iam:ListUsers',
  'iam:ListAccessKeys',
  'iam:DeleteAccessKey',
  'iam:ListAttachedUserPolicies',
  'iam:DetachUserPolicy',
  'iam:ListUserPolicies',
  'iam:DeleteUserPolicy',
  'iam:ListGroupsForUser',
  'iam:RemoveUserFromGroup',
  'iam:DeleteLoginProfile',
  'iam:ListSSHPublicKeys',
  'iam:DeleteSSHPublicKey',
  'iam:ListSigningCertificates',
  'iam:DeleteSigningCertificate',
  'iam:ListServiceSpecificCredentials',
  'iam:DeleteServiceSpecificCredential',
  'iam:ListMFADevices',
  'iam:DeactivateMFADevice',
  'iam:DeleteUser',
];

// Item actions on the table itself (TransactWriteItems and TransactGetItems are authorized
// per item as PutItem, UpdateItem, ConditionCheckItem and GetItem). Within one table PutItem
// and UpdateItem can each write any item, and GetItem and BatchGetItem read the same items,
// so both pairs are granted: splitting them would bind the policy to the adapter's choice of
// call without narrowing what the function can do. No Scan, no DeleteItem: the table is the
// audit record.
const LEASE_ITEM_ACTIONS = [
  'dynamodb:GetItem',
  'dynamodb:BatchGetItem',
  'dynamodb:PutItem',
  'dynamodb:UpdateItem',
  'dynamodb:ConditionCheckItem',
];

// One line per request, also for those IAM refused before the function ran. Never a body
// (API Gateway cannot log one): the issued password stays out of the logs.
const ACCESS_LOG_FORMAT = JSON.stringify({
  requestId: '$context.requestId',
  time: '$context.requestTime',
  routeKey: '$context.routeKey',
  status: '$context.status',
  caller: '$context.identity.userArn',
  sourceIp: '$context.identity.sourceIp',
  userAgent: '$context.identity.userAgent',
  error: '$context.error.message',
  integrationError: '$context.integrationErrorMessage',
  responseLength: '$context.responseLength',
});

/** The five routes: method, OpenAPI path, the path's parameter. */
const ROUTES: Array<{ id: string; method: string; path: string; parameter?: string }> = [
  { id: 'Issue', method: 'POST', path: '/v1/credentials/{role}', parameter: 'role' },
  { id: 'Renew', method: 'POST', path: '/v1/leases/{lease_id}/renew', parameter: 'lease_id' },
  { id: 'Revoke', method: 'DELETE', path: '/v1/leases/{lease_id}', parameter: 'lease_id' },
  { id: 'ListRoles', method: 'GET', path: '/v1/roles' },
  { id: 'ListLeases', method: 'GET', path: '/v1/leases' },
];

function fullArnOf(secret: secretsmanager.ISecret): string {
  if (!secret.secretFullArn) {
    throw new Error(`keyturn: lease admin secret ${secret.node.path} needs its full ARN (Secret.fromSecretCompleteArn), as the roles file names it`);
  }
  return secret.secretFullArn;
}

/**
 * keyturn's dynamic credentials: issue-credentials behind an HTTP API whose every route
 * requires IAM authorization (SigV4), reap-leases every minute, the lease table and the
 * roles layer.
 */
export class KeyturnCredentialsApi extends Construct {
  public readonly issueFunction: lambda.Function;
  public readonly reapFunction: lambda.Function;
  public readonly leaseTable: dynamodb.Table;
  /** The roles layer version both functions run with: `rolesLayer`, or the one built from `rolesFile`. */
  public readonly rolesLayer: lambda.ILayerVersion;
  public readonly api: apigwv2.CfnApi;
  /** Base URL of the API. */
  public readonly apiUrl: string;
  /** Prefix of the execute-api:Invoke resources to grant callers (`<prefix>/POST/v1/credentials/<role>`). */
  public readonly invokeArnPrefix: string;

  constructor(scope: Construct, id: string, props: KeyturnCredentialsApiProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const prefix = prefixOf(props);

    // The audit record of who got which credentials, when, until when, and who revoked
    // them. No TTL attribute and no DeleteItem in any policy; the table survives stack
    // deletion and replacement (Retain), a delete by hand (deletion protection) and bad
    // writes (point-in-time recovery). Encrypted with the AWS managed key, which needs no
    // grant. No table name: the functions get it from KEYTURN_LEASE_TABLE.
    this.leaseTable = new dynamodb.Table(this, 'LeaseTable', {
      partitionKey: { name: 'lease_id', type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      deletionProtection: true,
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    skipLinters(this.leaseTable.node.defaultChild as dynamodb.CfnTable, [
      {
        id: 'CKV_AWS_119',
        comment: 'a lease holds no secret (user names, ARNs, times); the AWS managed key needs no grant to the functions',
      },
    ]);
    // due: the reaper's work, earliest first, live leases only. holder: a caller's own live
    // leases (GET /v1/leases), earliest expiry first.
    this.leaseTable.addGlobalSecondaryIndex({
      indexName: 'due',
      partitionKey: { name: 'due_shard', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'due_at', type: dynamodb.AttributeType.NUMBER },
      projectionType: dynamodb.ProjectionType.ALL,
    });
    this.leaseTable.addGlobalSecondaryIndex({
      indexName: 'holder',
      partitionKey: { name: 'live_caller', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'expires_at', type: dynamodb.AttributeType.NUMBER },
      projectionType: dynamodb.ProjectionType.ALL,
    });

    // The roles file alone, at /opt/roles.toml. A changed file is a new layer version,
    // which both functions move to in the same deployment; old versions are deleted (the
    // file's history is in your repository).
    if ((props.rolesFile === undefined) === (props.rolesLayer === undefined)) {
      throw new Error('keyturn: give KeyturnCredentialsApi exactly one of rolesFile and rolesLayer');
    }
    this.rolesLayer = props.rolesLayer ?? this.buildRolesLayer(prefix, props.rolesFile!);

    const adminSecrets = props.leaseAdminSecrets ?? [];
    const adminArns = adminSecrets.map(fullArnOf);
    const viaSecretsManager = `secretsmanager.${stack.region}.${stack.urlSuffix}`;
    const leaseUsers = props.leaseIamUsers;
    const leaseUserPath = leaseUsers?.path ?? '/keyturn-leases/';
    if (!/^\/([A-Za-z0-9+=,.@_-]+\/)+$/.test(leaseUserPath)) {
      throw new Error(`keyturn: leaseIamUsers.path ${JSON.stringify(leaseUserPath)} must be an IAM path below the root, such as /keyturn-leases/ (not /)`);
    }
    const leaseUsersArn = stack.formatArn({ service: 'iam', region: '', resource: 'user', resourceName: `${leaseUserPath.slice(1)}*` });

    // What both functions need: the admin secrets, their keys, the lease items, and the
    // deletion of lease users.
    const shared = (policy: iam.PolicyDocument) => {
      if (adminArns.length > 0) {
        policy.addStatements(
          // DescribeSecret: an RDS-managed admin secret's tags name its instance or cluster.
          new iam.PolicyStatement({
            sid: 'ReadLeaseAdminSecrets',
            actions: ['secretsmanager:GetSecretValue', 'secretsmanager:DescribeSecret'],
            resources: adminArns,
          }),
        );
      }
      secretsByKeys(adminSecrets, adminArns, defaultKeysOf(props)).forEach(({ keys, arns }, i) => {
        policy.addStatements(
          new iam.PolicyStatement({
            sid: `DecryptLeaseAdminSecrets${i === 0 ? '' : i}`,
            actions: ['kms:Decrypt'],
            resources: keys.map((key) => key.keyArn),
            conditions: { StringEquals: { 'kms:ViaService': viaSecretsManager, 'kms:EncryptionContext:SecretARN': arns } },
          }),
        );
      });
      policy.addStatements(new iam.PolicyStatement({ sid: 'LeaseItems', actions: LEASE_ITEM_ACTIONS, resources: [this.leaseTable.tableArn] }));
      // An RDS-managed admin secret holds no host: the functions read it from the instance
      // or cluster the secret names. Describe* has no resource-level scoping to narrow.
      policy.addStatements(
        new iam.PolicyStatement({ sid: 'LocateRdsManagedAdmins', actions: ['rds:DescribeDBInstances', 'rds:DescribeDBClusters'], resources: ['*'] }),
      );
    };
    const deleteLeaseUsers = (policy: iam.PolicyDocument) => {
      if (leaseUsers) {
        policy.addStatements(
          new iam.PolicyStatement({ sid: 'DeleteLeaseIamUsers', actions: DELETE_LEASE_IAM_USER_ACTIONS, resources: [leaseUsersArn] }),
        );
      }
    };

    const inVpc = props.vpc !== undefined;
    const environment = { KEYTURN_ROLES_FILE: '/opt/roles.toml', KEYTURN_LEASE_TABLE: this.leaseTable.tableName };

    const issue = keyturnRole(this, 'IssueCredentialsRole', inVpc);
    const reap = keyturnRole(this, 'ReapLeasesRole', inVpc);
    // The reaper's failures: runs Scheduler could not deliver, and runs that failed (through
    // the function's OnFailure destination), each with its error, where an operator can see
    // that the reaper stopped working.
    const deadLetters = new sqs.Queue(this, 'ReapLeasesDeadLetterQueue', {
      queueName: `${prefix}-reap-leases-dlq`,
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      // A queue policy that denies every request not over TLS, as the template's.
      enforceSSL: true,
    });
    shared(issue.policy);
    // GET /v1/leases: a caller's live leases by the holder index, and for API administrators
    // (?all=true) every live or failing lease by the due index; never a Scan of the table.
    issue.policy.addStatements(
      new iam.PolicyStatement({
        sid: 'ListLeases',
        actions: ['dynamodb:Query'],
        resources: [`${this.leaseTable.tableArn}/index/holder`, `${this.leaseTable.tableArn}/index/due`],
      }),
    );
    if (leaseUsers) {
      // Users under the lease path only, and only with the boundary: a user created or given
      // a policy without it is refused by IAM itself.
      issue.policy.addStatements(
        new iam.PolicyStatement({
          sid: 'CreateLeaseIamUsers',
          actions: ['iam:CreateUser', 'iam:AttachUserPolicy', 'iam:PutUserPolicy'],
          resources: [leaseUsersArn],
          conditions: { StringEquals: { 'iam:PermissionsBoundary': leaseUsers.permissionsBoundary.managedPolicyArn } },
        }),
        new iam.PolicyStatement({ sid: 'KeyLeaseIamUsers', actions: ['iam:CreateAccessKey'], resources: [leaseUsersArn] }),
        // keyturn's own tags only (CreateUser's tags are authorized as TagUser too).
        new iam.PolicyStatement({
          sid: 'TagLeaseIamUsers',
          actions: ['iam:TagUser'],
          resources: [leaseUsersArn],
          conditions: {
            'ForAllValues:StringEquals': { 'aws:TagKeys': ['keyturn:lease-id', 'keyturn:caller', 'keyturn:expires-at'] },
            Null: { 'aws:TagKeys': 'false' },
          },
        }),
      );
      if (leaseUsers.groups && leaseUsers.groups.length > 0) {
        issue.policy.addStatements(
          new iam.PolicyStatement({ sid: 'AddLeaseIamUsersToGroups', actions: ['iam:AddUserToGroup'], resources: leaseUsers.groups.map((g) => g.groupArn) }),
        );
      }
    }
    deleteLeaseUsers(issue.policy);
    for (const role of [issue.role, reap.role]) {
      acknowledgeWildcardResource(
        role,
        '*',
        "rds:DescribeDBInstances/DescribeDBClusters (read-only) locate an RDS-managed admin secret's instance, which only the secret names, at run time.",
      );
    }
    if (leaseUsers) {
      for (const role of [issue.role, reap.role]) {
        acknowledgeWildcardResource(
          role,
          leaseUsersArn,
          `The lease users are the IAM users under ${leaseUserPath} (a sub-path, never /); creating one or giving it a policy also requires the permissions boundary.`,
        );
      }
    }
    if (props.assumableRoles && props.assumableRoles.length > 0) {
      issue.policy.addStatements(
        new iam.PolicyStatement({ sid: 'AssumeLeaseRoles', actions: ['sts:AssumeRole', 'sts:TagSession'], resources: props.assumableRoles.map((r) => r.roleArn) }),
      );
    }
    if (props.rdsDbUserArns && props.rdsDbUserArns.length > 0) {
      issue.policy.addStatements(new iam.PolicyStatement({ sid: 'SignRdsTokens', actions: ['rds-db:connect'], resources: props.rdsDbUserArns }));
    }

    this.issueFunction = keyturnFunction(this, 'IssueCredentials', {
      ...props,
      binary: 'issue-credentials',
      name: 'issue-credentials',
      description:
        'keyturn issue-credentials, short-lived database users, IAM users, STS sessions and RDS tokens with a lease (HTTP API, IAM authorization)',
      // Below API Gateway's 30 s integration timeout, so the function is stopped before the
      // caller is told it failed. A lease is written before its user is created: a user
      // created by a stopped invocation is still revoked at the lease's expiry.
      timeout: Duration.seconds(25),
      role: issue.role,
      environment,
      layers: [this.rolesLayer],
      checkov: [
        {
          id: 'CKV_AWS_116',
          comment: 'API Gateway invokes it synchronously: the caller receives the error, and a dead-letter queue sees only asynchronous invocations',
        },
        { id: 'CKV_AWS_115', comment: "bounded by the API's throttling (apiRateLimit, apiBurstLimit), which callers see as 429" },
        ENVIRONMENT_NO_SECRET,
      ],
    });

    // As issue-credentials, to revoke leases and read those the orphan sweep checks.
    // PutItem is granted for the same reason; the reaper creates no lease.
    shared(reap.policy);
    // The leases due, by the due index only (never a Scan of the table).
    reap.policy.addStatements(
      new iam.PolicyStatement({ sid: 'DueLeases', actions: ['dynamodb:Query'], resources: [`${this.leaseTable.tableArn}/index/due`] }),
    );
    deleteLeaseUsers(reap.policy);
    this.reapFunction = keyturnFunction(this, 'ReapLeases', {
      ...props,
      binary: 'reap-leases',
      name: 'reap-leases',
      description: 'keyturn reap-leases, revokes expired leases and drops orphan kt_ users (every minute)',
      // It stops starting work before its deadline; a run that overlaps the next minute's is
      // safe. No reserved concurrency: runs may overlap (every lease write is conditional on
      // the version it read), and a cap would only hold back the run after a slow one.
      timeout: Duration.seconds(60),
      role: reap.role,
      environment,
      layers: [this.rolesLayer],
      checkov: [
        {
          id: 'CKV_AWS_116',
          comment: "a failed run goes to the dead-letter queue with its error through EventInvokeConfig's OnFailure, which the check does not read",
        },
        {
          id: 'CKV_AWS_115',
          comment:
            "a reservation would guard its capacity but fails to deploy where the account's concurrency is Lambda's low default; a throttled run lands in the dead-letter queue",
        },
        ENVIRONMENT_NO_SECRET,
      ],
    });
    // The next minute's run is the retry: no asynchronous retries of a failed run, and an
    // event that waited a minute is dropped rather than run late beside the next one.
    // A failed run goes to the dead-letter queue with its error. Written here, with the
    // grant in the role's own policy: configureAsyncInvoke's destination would add a
    // separate policy resource.
    reap.policy.addStatements(
      new iam.PolicyStatement({ sid: 'ReportFailedRuns', actions: ['sqs:SendMessage'], resources: [deadLetters.queueArn] }),
    );
    new lambda.CfnEventInvokeConfig(this, 'ReapLeasesEventInvokeConfig', {
      functionName: this.reapFunction.functionName,
      qualifier: '$LATEST',
      maximumRetryAttempts: 0,
      maximumEventAgeInSeconds: 60,
      destinationConfig: { onFailure: { destination: deadLetters.queueArn } },
    });

    // Scheduler invokes the reaper every minute with a role of its own that may invoke this
    // function and nothing else; the window is off, a failed invocation is not retried, and
    // what Scheduler could not deliver at all lands in the dead-letter queue.

    // keyturn's schedules live in a group of their own, which the role's trust names: no
    // other schedule of the account may use the role.
    const scheduleGroup = new scheduler.CfnScheduleGroup(this, 'ScheduleGroup', { name: prefix });
    const scheduleRole = new iam.Role(this, 'ReapLeasesScheduleRole', {
      description: 'EventBridge Scheduler invokes keyturn reap-leases and reports what it could not deliver',
      // Only this stack's schedules may use the role (the confused deputy): Scheduler gives
      // the schedule's group as the source.
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com').withConditions({
        StringEquals: { 'aws:SourceAccount': stack.account },
        ArnEquals: { 'aws:SourceArn': scheduleGroup.attrArn },
      }),
      inlinePolicies: {
        InvokeReaper: new iam.PolicyDocument({
          statements: [
            new iam.PolicyStatement({ sid: 'InvokeReaper', actions: ['lambda:InvokeFunction'], resources: [this.reapFunction.functionArn] }),
            new iam.PolicyStatement({ sid: 'ReportUndelivered', actions: ['sqs:SendMessage'], resources: [deadLetters.queueArn] }),
          ],
        }),
      },
    });
    skipLinters(
      deadLetters.node.defaultChild as sqs.CfnQueue,
      [{ id: 'CKV_AWS_27', comment: 'encrypted by SQS-managed SSE (SqsManagedSseEnabled); the check knows only KmsMasterKeyId' }],
      // No redrive policy: it is the dead-letter queue, nothing is redriven from it.
      ['ES6000'],
    );
    Validations.of(deadLetters).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: "This queue is the reaper schedule's dead-letter queue; nothing fails over from it.",
    });
    new scheduler.CfnSchedule(this, 'ReapLeasesSchedule', {
      name: `${prefix}-reap-leases`,
      groupName: scheduleGroup.ref,
      description: 'keyturn reap-leases, every minute',
      scheduleExpression: 'rate(1 minute)',
      flexibleTimeWindow: { mode: 'OFF' },
      state: 'ENABLED',
      target: {
        arn: this.reapFunction.functionArn,
        roleArn: scheduleRole.roleArn,
        // What the function is given: which schedule fired, and for when.
        input: '{"source":"keyturn.scheduler","schedule":"<aws.scheduler.schedule-arn>","scheduled_time":"<aws.scheduler.scheduled-time>"}',
        retryPolicy: { maximumRetryAttempts: 0, maximumEventAgeInSeconds: 60 },
        deadLetterConfig: { arn: deadLetters.queueArn },
      },
    });

    // The API is the OpenAPI document SAM generates from infra/template.yaml (five routes,
    // each with SigV4 (AWS_IAM) security and a payload 2.0 proxy integration), so both
    // deployments create the same API. There is no $default route: any other path is a 404
    // from API Gateway, and callers without execute-api:Invoke on a route are refused before
    // the function runs.
    const integration = {
      httpMethod: 'POST',
      type: 'aws_proxy',
      uri: `arn:${stack.partition}:apigateway:${stack.region}:lambda:path/2015-03-31/functions/${this.issueFunction.functionArn}/invocations`,
      payloadFormatVersion: '2.0',
    };
    const paths: Record<string, Record<string, unknown>> = {};
    for (const route of ROUTES) {
      paths[route.path] = {
        ...paths[route.path],
        [route.method.toLowerCase()]: {
          'x-amazon-apigateway-integration': integration,
          security: [{ AWS_IAM: [] }],
          ...(route.parameter ? { parameters: [{ required: true, name: route.parameter, in: 'path' }] } : {}),
          responses: {},
        },
      };
    }
    this.api = new apigwv2.CfnApi(this, 'CredentialsApi', {
      body: {
        openapi: '3.0.1',
        info: {
          title: `${prefix}-credentials`,
          description: 'keyturn dynamic credentials (issue-credentials); IAM authorization on every route',
          version: '1.0',
        },
        paths,
        components: {
          securitySchemes: {
            AWS_IAM: { type: 'apiKey', name: 'Authorization', in: 'header', 'x-amazon-apigateway-authtype': 'awsSigv4' },
          },
        },
      },
      failOnWarnings: true,
    });
    const accessLog = new logs.LogGroup(this, 'CredentialsApiAccessLog', {
      logGroupName: `/aws/apigateway/${prefix}-credentials`,
      retention: props.logRetention ?? logs.RetentionDays.ONE_YEAR,
      // Kept with the stack deleted or the group replaced, as the functions' log groups.
      removalPolicy: RemovalPolicy.RETAIN,
    });
    skipLinters(accessLog.node.defaultChild as logs.CfnLogGroup, [
      {
        id: 'CKV_AWS_158',
        comment: 'API Gateway cannot log a body, so no issued secret reaches it; CloudWatch Logs encrypts every log group at rest',
      },
    ]);
    new apigwv2.CfnStage(this, 'CredentialsApiStage', {
      apiId: this.api.ref,
      stageName: '$default',
      autoDeploy: true,
      // Each route is throttled over all callers, since each issue opens an admin session.
      defaultRouteSettings: { throttlingRateLimit: props.apiRateLimit ?? 10, throttlingBurstLimit: props.apiBurstLimit ?? 20 },
      accessLogSettings: { destinationArn: accessLog.logGroupArn, format: ACCESS_LOG_FORMAT },
    });
    // API Gateway may invoke the function for these routes only.
    for (const route of ROUTES) {
      new lambda.CfnPermission(this, `${route.id}Permission`, {
        functionName: this.issueFunction.functionName,
        action: 'lambda:InvokeFunction',
        principal: 'apigateway.amazonaws.com',
        sourceArn: stack.formatArn({
          service: 'execute-api',
          resource: this.api.ref,
          resourceName: `*/${route.method}${route.path.replace(/\{[^}]+\}/g, '*')}`,
          arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
        }),
      });
    }
    this.apiUrl = `https://${this.api.ref}.execute-api.${stack.region}.${stack.urlSuffix}`;
    this.invokeArnPrefix = stack.formatArn({ service: 'execute-api', resource: this.api.ref, resourceName: '$default', arnFormat: ArnFormat.SLASH_RESOURCE_NAME });
  }

  // The roles file alone, named roles.toml: a directory of its own, which the asset copies
  // into the cloud assembly, removed when synth ends.
  private buildRolesLayer(prefix: string, file: string): lambda.LayerVersion {
    const rolesFile = path.resolve(file);
    if (!fs.statSync(rolesFile, { throwIfNoEntry: false })?.isFile()) {
      throw new Error(`keyturn: roles file ${rolesFile} not found`);
    }
    const layerDir = fs.mkdtempSync(path.join(os.tmpdir(), 'keyturn-roles-'));
    process.once('exit', () => fs.rmSync(layerDir, { recursive: true, force: true }));
    fs.copyFileSync(rolesFile, path.join(layerDir, 'roles.toml'));
    return new lambda.LayerVersion(this, 'RolesLayer', {
      layerVersionName: `${prefix}-roles`,
      description: "keyturn's roles file (/opt/roles.toml) for issue-credentials and reap-leases",
      code: lambda.Code.fromAsset(layerDir),
      // RustFunction runs its functions on `new Runtime('provided.al2023')`, without the
      // family Runtime.PROVIDED_AL2023 has, and CDK's check of a function's layers compares
      // both: the layer names the same runtime as RustFunction does.
      compatibleRuntimes: [new lambda.Runtime('provided.al2023')],
      removalPolicy: RemovalPolicy.DESTROY,
    });
  }
}
