//! KeyturnRotation: keyturn's rotation for a Secrets Manager secret (or, as the SAM
//! template does, for every secret a name pattern matches), with the grants that secret
//! needs and nothing more. The rotation functions are shared: one per stack per strategy
//! (and one for IAM keys), whatever the number of secrets they rotate.

import { ArnFormat, Duration, Lazy, Names, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import {
  defaultKeysOf,
  functionArnOf,
  keyturnFunction,
  KeyturnFunctionOptions,
  KeyturnNetworkProps,
  keyturnRole,
  prefixOf,
  secretsByKeys,
} from './function';
import { acknowledgeWildcardResource, ENVIRONMENT_NO_SECRET } from './nag';

/** What a secret holds: a database engine's user (rotate-database) or an IAM user's key. */
export type RotationEngine = 'postgres' | 'mysql' | 'mariadb' | 'iam-key';

/**
 * How a database secret is rotated: its own user changes its password (single-user), or an
 * admin alternates two users (alternating-users, AWS's "multi-user").
 */
export type RotationStrategy = 'single-user' | 'alternating-users';

/** The three rotation functions a stack can have. */
export type RotationFunctionKind = RotationStrategy | 'iam-key';

const SECRETS_MANAGER_ROTATION_ACTIONS = [
  'secretsmanager:DescribeSecret',
  'secretsmanager:GetSecretValue',
  'secretsmanager:PutSecretValue',
  'secretsmanager:UpdateSecretVersionStage',
];

/** Settings of a rotation function; every rotation that shares the function must agree. */
export interface KeyturnRotationFunctionProps extends KeyturnFunctionOptions, KeyturnNetworkProps {
  /**
   * rotate-iam-key only touches IAM users under this path (a sub-path: `/` would put every
   * user of the account in its reach).
   *
   * @default '/keyturn/'
   */
  readonly iamUserPath?: string;
  /**
   * rotate-iam-key marks the previous key Inactive at finishSecret instead of leaving it
   * valid until the next rotation.
   *
   * @default false
   */
  readonly deactivatePreviousKey?: boolean;
}

const FUNCTION_IDS: Record<RotationFunctionKind, string> = {
  'single-user': 'KeyturnRotateDatabaseSingleUser',
  'alternating-users': 'KeyturnRotateDatabaseAlternatingUsers',
  'iam-key': 'KeyturnRotateIamKey',
};

// What decides a function's configuration: constructs by path, the rest by value.
function settingsKey(kind: RotationFunctionKind, props: KeyturnRotationFunctionProps): string {
  return JSON.stringify(
    {
      prefix: prefixOf(props),
      architecture: props.architecture?.name ?? 'x86_64',
      lambdaDir: props.lambdaDir,
      sourceDir: props.sourceDir,
      endpoint: props.secretsManagerEndpoint,
      vpc: props.vpc,
      vpcSubnets: props.vpcSubnets,
      securityGroups: props.securityGroups,
      iamUserPath: kind === 'iam-key' ? (props.iamUserPath ?? '/keyturn/') : undefined,
      deactivatePreviousKey: kind === 'iam-key' ? (props.deactivatePreviousKey ?? false) : undefined,
    },
    (_key, value) => (value instanceof Construct ? value.node.path : value),
  );
}

/**
 * One rotation function of a stack: rotate-database for one strategy, or rotate-iam-key.
 * KeyturnRotation creates it on first use and reuses it (`KeyturnRotationFunction.of`); the
 * grants on secrets are added by each KeyturnRotation, for its own secrets.
 */
export class KeyturnRotationFunction extends Construct {
  /** The function of this kind in `scope`'s stack, created with `props` if there is none. */
  public static of(scope: Construct, kind: RotationFunctionKind, props: KeyturnRotationFunctionProps): KeyturnRotationFunction {
    const stack = Stack.of(scope);
    const existing = stack.node.tryFindChild(FUNCTION_IDS[kind]);
    if (existing instanceof KeyturnRotationFunction) {
      if (existing.settings !== settingsKey(kind, props)) {
        throw new Error(
          `keyturn: the ${kind} rotation function of stack ${stack.stackName} is shared by every rotation of that kind, ` +
            'which must then give it the same settings (prefix, architecture, binaries, endpoint, VPC, subnets, security groups, IAM user path)',
        );
      }
      return existing;
    }
    // Checked before the function's construct is added to the stack.
    if (kind === 'iam-key') {
      if (props.vpc) {
        // As the SAM template: IAM and STS are public endpoints.
        throw new Error('keyturn: rotate-iam-key runs outside any VPC (IAM and STS are public endpoints): give it no vpc');
      }
      const path = props.iamUserPath ?? '/keyturn/';
      if (!/^\/([A-Za-z0-9+=,.@_-]+\/)+$/.test(path)) {
        throw new Error(`keyturn: iamUserPath ${JSON.stringify(path)} must be an IAM path below the root, such as /keyturn/ (not /)`);
      }
    }
    prefixOf(props);
    return new KeyturnRotationFunction(stack, FUNCTION_IDS[kind], kind, props);
  }

  public readonly kind: RotationFunctionKind;
  public readonly function: lambda.Function;
  /** The function's name, `<prefix>-<name>`, as text (the alarms' names start with it). */
  public readonly functionName: string;
  /** The function's ARN, built from its name: what its own policy names. */
  public readonly functionArn: string;
  /** The inline policy of the function's role, to which each rotation adds its grants. */
  public readonly policy: iam.PolicyDocument;
  /** The function's role. */
  public readonly role: iam.Role;
  private readonly settings: string;
  private readonly adminSecretArns: string[] = [];

  private constructor(scope: Construct, id: string, kind: RotationFunctionKind, props: KeyturnRotationFunctionProps) {
    super(scope, id);
    this.kind = kind;
    this.settings = settingsKey(kind, props);
    const prefix = prefixOf(props);
    const { role, policy } = keyturnRole(this, 'Role', props.vpc !== undefined);
    this.policy = policy;
    this.role = role;

    const name = kind === 'iam-key' ? 'iam-key' : `database-${kind}`;
    this.functionName = `${prefix}-${name}`;
    this.functionArn = functionArnOf(this, prefix, name);
    const environment: Record<string, string> = {};
    if (kind === 'iam-key') {
      const path = props.iamUserPath ?? '/keyturn/';
      environment.KEYTURN_IAM_PATH_PREFIX = path;
      environment.KEYTURN_IAM_DEACTIVATE_PREVIOUS = props.deactivatePreviousKey ? 'true' : 'false';
      const users = Stack.of(this).formatArn({ service: 'iam', region: '', resource: 'user', resourceName: `${path.slice(1)}*` });
      policy.addStatements(
        new iam.PolicyStatement({
          sid: 'KeysOfUsersInScope',
          actions: ['iam:GetUser', 'iam:ListAccessKeys', 'iam:CreateAccessKey', 'iam:DeleteAccessKey', 'iam:UpdateAccessKey'],
          resources: [users],
        }),
        // Only the tags keyturn writes: <access key id> = keyturn-rotation-..., the creation
        // marker keyturn-creating-key = keyturn-rotation-..., and the mark keyturn-rotated =
        // keyturn-rotation-... (lease users may not touch such users).
        new iam.PolicyStatement({
          sid: 'KeyturnUserTagsOnly',
          actions: ['iam:TagUser', 'iam:UntagUser'],
          resources: [users],
          conditions: {
            Null: { 'aws:TagKeys': 'false' },
            'ForAllValues:StringLike': { 'aws:TagKeys': ['AKIA*', 'keyturn-creating-key', 'keyturn-rotated'] },
            StringLikeIfExists: {
              'aws:RequestTag/keyturn-creating-key': 'keyturn-rotation-*',
              'aws:RequestTag/keyturn-rotated': 'keyturn-rotation-*',
            },
          },
        }),
      );
      acknowledgeWildcardResource(
        role,
        users,
        `rotate-iam-key's scope is the IAM users under ${path} (a sub-path, never /); its tag actions are also limited to keyturn's own tag keys.`,
      );
    } else {
      environment.KEYTURN_STRATEGY = kind;
    }
    if (kind === 'alternating-users') {
      // RDS-managed admin secrets hold no host: the function reads it from the instance or
      // cluster the secret's tag names. Describe* has no resource-level scoping to narrow.
      policy.addStatements(
        new iam.PolicyStatement({
          sid: 'LocateRdsManagedAdmins',
          actions: ['rds:DescribeDBInstances', 'rds:DescribeDBClusters'],
          resources: ['*'],
        }),
      );
      acknowledgeWildcardResource(
        role,
        '*',
        "rds:DescribeDBInstances/DescribeDBClusters (read-only) locate an RDS-managed admin's instance, which only the admin secret's tag names, at run time.",
      );
    }

    this.function = keyturnFunction(this, 'Function', {
      ...props,
      binary: kind === 'iam-key' ? 'rotate-iam-key' : 'rotate-database',
      name,
      description:
        kind === 'iam-key'
          ? 'keyturn rotate-iam-key, two keys per user (active, previous, revoked)'
          : `keyturn rotate-database, ${kind} strategy`,
      timeout: Duration.seconds(kind === 'iam-key' ? 60 : 30),
      role,
      environment,
      checkov: [
        {
          id: 'CKV_AWS_116',
          comment: 'Secrets Manager is the retry and the record: a failed step is retried by the rotation itself and logged in CloudTrail',
        },
        { id: 'CKV_AWS_115', comment: "one rotation per secret at a time already; a cap would hold back other secrets' rotations" },
        ENVIRONMENT_NO_SECRET,
        ...(kind === 'iam-key'
          ? [{ id: 'CKV_AWS_117', comment: 'IAM and Secrets Manager are public endpoints and it reaches no database: no VPC' }]
          : []),
      ],
    });
    if (kind === 'alternating-users') {
      // The same list as the policy's, checked in the function too: a masterarn outside it
      // is refused before it is read, also where the policy is widened by hand.
      this.function.addEnvironment(
        'KEYTURN_ADMIN_SECRET_ARNS',
        Lazy.string({ produce: () => [...new Set(this.adminSecretArns)].join(',') }),
      );
    }
  }

  /** Records an admin secret the function may act as (KEYTURN_ADMIN_SECRET_ARNS). */
  public allowAdminSecret(arn: string): void {
    this.adminSecretArns.push(arn);
  }
}

export interface KeyturnRotationProps extends KeyturnRotationFunctionProps {
  /**
   * The secret to rotate: keyturn's function is attached to it with a rotation schedule.
   * Exactly one of `secret` and `secretNamePattern`.
   */
  readonly secret?: secretsmanager.ISecret;
  /**
   * Instead of one secret: the names (a pattern such as `prod/*`) of the secrets of this
   * account and region the function may rotate, as the SAM template's SecretNamePattern.
   * Nothing is scheduled; point each secret's rotation at the function yourself (or with
   * `scheduleRotation`).
   */
  readonly secretNamePattern?: string;
  /** What the secret holds; postgres, mysql and mariadb share rotate-database. */
  readonly engine: RotationEngine;
  /** For a database secret: how it is rotated. Not for iam-key. */
  readonly strategy?: RotationStrategy;
  /** alternating-users with `secret`: the admin secret its `masterarn` names (full ARN). */
  readonly adminSecret?: secretsmanager.ISecret;
  /** alternating-users with `secretNamePattern`: the admin secrets their `masterarn`s may name. */
  readonly adminSecrets?: secretsmanager.ISecret[];
  /**
   * The customer managed key of the secrets (and of admin secrets that do not name their
   * own); usable by the function only through Secrets Manager and for those secrets.
   *
   * @default - the secret's own `encryptionKey`, else none (the AWS managed key needs no grant)
   */
  readonly encryptionKey?: kms.IKey;
  /**
   * With `secretNamePattern`, where the secrets use several customer managed keys: each of
   * them, usable as `encryptionKey` is (besides it, if given).
   *
   * @default - none
   */
  readonly encryptionKeys?: kms.IKey[];
  /**
   * How often the secret is rotated: a Duration (whole days, or 4 to 23 hours) or Secrets
   * Manager's `rate(...)`/`cron(...)` expression. With `secret` only.
   *
   * @default Duration.days(30)
   */
  readonly schedule?: Duration | string;
  /**
   * How long after its scheduled start a rotation may begin (Secrets Manager's Duration, 1
   * to 24 hours).
   *
   * @default - Secrets Manager's default window
   */
  readonly rotationWindow?: Duration;
  /**
   * Whether Secrets Manager rotates the secret as soon as the schedule is created or changed.
   *
   * @default - Secrets Manager's default (true)
   */
  readonly rotateImmediately?: boolean;
}

/** Options of a rotation schedule. */
export interface RotationScheduleOptions {
  readonly schedule?: Duration | string;
  readonly rotationWindow?: Duration;
  readonly rotateImmediately?: boolean;
}

function scheduleExpression(schedule: Duration | string): string {
  if (typeof schedule === 'string') {
    // As the SAM template's RotationScheduleExpression.
    if (!/^(rate\(\d+ (hours|days)\)|cron\(.+\))$/.test(schedule)) {
      throw new Error(`keyturn: schedule ${JSON.stringify(schedule)} is not rate(N hours), rate(N days) or cron(...)`);
    }
    return schedule;
  }
  const hours = schedule.toHours();
  if (hours % 24 === 0 && hours >= 24 && hours <= 24 * 1000) {
    return `rate(${hours / 24} days)`;
  }
  if (hours >= 4 && hours <= 23) {
    return `rate(${hours} hours)`;
  }
  throw new Error(`keyturn: schedule ${schedule.toHumanString()}: Secrets Manager rotates every 4 to 23 hours or every 1 to 1000 days`);
}

function windowOf(window: Duration): string {
  const hours = window.toHours();
  if (hours < 1 || hours > 24) {
    throw new Error(`keyturn: rotationWindow ${window.toHumanString()} must be 1 to 24 hours`);
  }
  return `${hours}h`;
}

// Secrets Manager appends 6 characters to a secret's name in its ARN; an ARN without them
// (a secret imported by name) is matched with them.
function policyArnOf(secret: secretsmanager.ISecret): string {
  return secret.secretFullArn ?? `${secret.secretArn}-??????`;
}

function fullArnOf(secret: secretsmanager.ISecret, what: string): string {
  if (!secret.secretFullArn) {
    throw new Error(`keyturn: ${what} ${secret.node.path} needs its full ARN (Secret.fromSecretCompleteArn), which the function lists and the policy names`);
  }
  return secret.secretFullArn;
}

/**
 * keyturn's rotation for a secret: the shared function of its kind, the grants on that
 * secret (and its admin secret and keys), Secrets Manager's permission to invoke the function
 * for it, and its rotation schedule.
 *
 *     new KeyturnRotation(this, 'R', { secret, engine: 'postgres', strategy: 'single-user', vpc });
 */
export class KeyturnRotation extends Construct {
  /** The rotation function (shared with the stack's other rotations of this kind). */
  public readonly rotationFunction: KeyturnRotationFunction;
  /** The secret's rotation schedule (with `secret`). */
  public readonly rotationSchedule?: secretsmanager.CfnRotationSchedule;
  private readonly permission: lambda.CfnPermission;

  constructor(scope: Construct, id: string, props: KeyturnRotationProps) {
    super(scope, id);
    if ((props.secret === undefined) === (props.secretNamePattern === undefined)) {
      throw new Error('keyturn: give KeyturnRotation exactly one of secret and secretNamePattern');
    }
    let kind: RotationFunctionKind;
    if (props.engine === 'iam-key') {
      if (props.strategy !== undefined) {
        throw new Error('keyturn: an iam-key secret has no strategy (rotate-iam-key keeps two keys per user)');
      }
      kind = 'iam-key';
    } else {
      if (props.strategy === undefined) {
        throw new Error(`keyturn: a ${props.engine} secret needs a strategy: single-user or alternating-users`);
      }
      kind = props.strategy;
    }
    const admins = props.secret ? (props.adminSecret ? [props.adminSecret] : []) : (props.adminSecrets ?? []);
    if (props.secret ? props.adminSecrets !== undefined : props.adminSecret !== undefined) {
      throw new Error('keyturn: adminSecret goes with secret, adminSecrets with secretNamePattern');
    }
    if (kind === 'alternating-users' && admins.length === 0) {
      throw new Error('keyturn: alternating-users rotation acts as an admin: give its admin secret (adminSecret, or adminSecrets with a pattern)');
    }
    if (kind !== 'alternating-users' && admins.length > 0) {
      throw new Error(`keyturn: ${kind} rotation reads no admin secret`);
    }
    if (props.secretNamePattern !== undefined) {
      if (!/^[A-Za-z0-9/_+=.@*?-]+$/.test(props.secretNamePattern)) {
        throw new Error(`keyturn: secretNamePattern ${JSON.stringify(props.secretNamePattern)} has characters a secret name cannot`);
      }
      if (props.schedule !== undefined || props.rotationWindow !== undefined || props.rotateImmediately !== undefined) {
        throw new Error('keyturn: with secretNamePattern nothing is scheduled; schedule each secret with scheduleRotation');
      }
    }

    const adminArns = admins.map((admin) => fullArnOf(admin, 'the admin secret'));
    const fn = KeyturnRotationFunction.of(this, kind, props);
    this.rotationFunction = fn;
    const stack = Stack.of(this);
    const suffix = Names.uniqueId(this).replace(/[^A-Za-z0-9]/g, '');
    const secretArn = props.secret
      ? policyArnOf(props.secret)
      : stack.formatArn({ service: 'secretsmanager', resource: 'secret', resourceName: props.secretNamePattern, arnFormat: ArnFormat.COLON_RESOURCE_NAME });

    // Every action on the rotated secrets carries AllowRotationLambdaArn = this function's
    // ARN: the function reads and writes only secrets whose rotation is configured to it.
    fn.policy.addStatements(
      new iam.PolicyStatement({
        sid: `RotateOwnSecrets${suffix}`,
        actions: kind === 'iam-key' ? SECRETS_MANAGER_ROTATION_ACTIONS : [...SECRETS_MANAGER_ROTATION_ACTIONS, 'secretsmanager:ListSecretVersionIds'],
        resources: [secretArn],
        conditions: { StringEquals: { 'secretsmanager:resource/AllowRotationLambdaArn': fn.functionArn } },
      }),
    );
    if (props.secretNamePattern !== undefined && props.secretNamePattern.includes('*')) {
      acknowledgeWildcardResource(
        fn.role,
        secretArn,
        `The secrets named ${props.secretNamePattern} are this rotation's chosen scope; every action on them also requires AllowRotationLambdaArn = this function.`,
      );
    }
    const viaSecretsManager = `secretsmanager.${stack.region}.${stack.urlSuffix}`;
    const defaultKeys = defaultKeysOf(props);
    const keys = props.secret?.encryptionKey ? [props.secret.encryptionKey] : defaultKeys;
    if (keys.length > 0) {
      fn.policy.addStatements(
        new iam.PolicyStatement({
          sid: `DecryptOwnSecrets${suffix}`,
          actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
          resources: keys.map((key) => key.keyArn),
          conditions: {
            StringEquals: { 'kms:ViaService': viaSecretsManager },
            StringLike: { 'kms:EncryptionContext:SecretARN': secretArn },
          },
        }),
      );
    }
    if (admins.length > 0) {
      adminArns.forEach((arn) => fn.allowAdminSecret(arn));
      fn.policy.addStatements(
        new iam.PolicyStatement({
          sid: `ReadAdminSecrets${suffix}`,
          actions: ['secretsmanager:DescribeSecret', 'secretsmanager:GetSecretValue'],
          resources: adminArns,
        }),
      );
      // One statement per set of keys, naming the admin secrets they may encrypt.
      secretsByKeys(admins, adminArns, defaultKeys).forEach(({ keys: adminKeys, arns }, i) => {
        fn.policy.addStatements(
          new iam.PolicyStatement({
            sid: `DecryptAdminSecrets${suffix}${i === 0 ? '' : i}`,
            actions: ['kms:Decrypt'],
            resources: adminKeys.map((key) => key.keyArn),
            conditions: { StringEquals: { 'kms:ViaService': viaSecretsManager, 'kms:EncryptionContext:SecretARN': arns } },
          }),
        );
      });
    }

    // Secrets Manager invokes the function with the secret's ARN as the source: only these
    // secrets, of this account, may have it invoked.
    this.permission = new lambda.CfnPermission(this, 'InvokePermission', {
      functionName: fn.function.functionName,
      action: 'lambda:InvokeFunction',
      principal: 'secretsmanager.amazonaws.com',
      sourceAccount: stack.account,
      sourceArn: secretArn,
    });

    if (props.secret) {
      this.rotationSchedule = this.scheduleRotation('Schedule', props.secret, {
        schedule: props.schedule ?? Duration.days(30),
        rotationWindow: props.rotationWindow,
        rotateImmediately: props.rotateImmediately,
      });
    }
  }

  /**
   * Puts a secret this rotation covers (with `secretNamePattern`, one the pattern matches)
   * on a schedule with its function. The first rotation starts when the schedule is created,
   * after the grants and the invoke permission.
   */
  public scheduleRotation(id: string, secret: secretsmanager.ISecret, options: RotationScheduleOptions = {}): secretsmanager.CfnRotationSchedule {
    const schedule = new secretsmanager.CfnRotationSchedule(this, id, {
      secretId: secret.secretArn,
      rotationLambdaArn: this.rotationFunction.function.functionArn,
      rotationRules: {
        scheduleExpression: scheduleExpression(options.schedule ?? Duration.days(30)),
        duration: options.rotationWindow ? windowOf(options.rotationWindow) : undefined,
      },
      rotateImmediatelyOnUpdate: options.rotateImmediately,
    });
    schedule.addResourceDependency(this.permission);
    return schedule;
  }
}
