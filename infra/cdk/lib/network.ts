//! KeyturnVpcEndpoints: the VPC endpoints keyturn's functions need in subnets without a NAT,
//! as infra/template.yaml creates them with CreateVpcEndpoints. With private DNS the
//! services' regional names resolve to the endpoints inside the VPC, so the functions need no
//! endpoint setting. IAM's API has an interface endpoint only in us-east-1
//! (com.amazonaws.iam, not created here): aws-iam-user roles elsewhere need a NAT.

import { Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { Construct } from 'constructs';
import { prefixOf } from './function';

export interface KeyturnVpcEndpointsProps {
  /**
   * @default 'keyturn'
   */
  readonly functionNamePrefix?: string;
  /** The VPC of the functions' subnets. */
  readonly vpc: ec2.IVpc;
  /** The functions' subnets, where the interface endpoints are placed. */
  readonly subnets: ec2.ISubnet[];
  /** The functions' security groups, from which the endpoints admit HTTPS (1 to 5). */
  readonly functionSecurityGroups: ec2.ISecurityGroup[];
  /**
   * Whether the dynamic credentials run in the VPC: then STS too and, with `routeTableIds`,
   * a DynamoDB gateway endpoint.
   *
   * @default false
   */
  readonly dynamicCredentials?: boolean;
  /**
   * The subnets' route tables, for the DynamoDB gateway endpoint.
   *
   * @default - no DynamoDB endpoint (a NAT, or one the VPC has)
   */
  readonly routeTableIds?: string[];
}

/**
 * Interface endpoints (private DNS) for Secrets Manager and the RDS API, STS with the
 * dynamic credentials, and a DynamoDB gateway endpoint, behind a security group that admits
 * HTTPS from the functions. Only for a VPC that has none for these services: two endpoints
 * of one service with private DNS cannot share a VPC.
 */
export class KeyturnVpcEndpoints extends Construct {
  public readonly securityGroup: ec2.CfnSecurityGroup;

  constructor(scope: Construct, id: string, props: KeyturnVpcEndpointsProps) {
    super(scope, id);
    const prefix = prefixOf(props);
    if (props.functionSecurityGroups.length < 1 || props.functionSecurityGroups.length > 5) {
      throw new Error("keyturn: KeyturnVpcEndpoints admits the functions' 1 to 5 security groups");
    }
    this.securityGroup = new ec2.CfnSecurityGroup(this, 'VpcEndpointSecurityGroup', {
      groupDescription: `${prefix}: VPC endpoints of keyturn, HTTPS from its functions`,
      vpcId: props.vpc.vpcId,
      securityGroupIngress: props.functionSecurityGroups.map((group) => ({
        ipProtocol: 'tcp',
        fromPort: 443,
        toPort: 443,
        sourceSecurityGroupId: group.securityGroupId,
        description: 'HTTPS from the functions',
      })),
    });
    const interfaceEndpoint = (endpointId: string, service: string) =>
      new ec2.CfnVPCEndpoint(this, endpointId, {
        vpcEndpointType: 'Interface',
        serviceName: `com.amazonaws.${this.region}.${service}`,
        vpcId: props.vpc.vpcId,
        subnetIds: props.subnets.map((subnet) => subnet.subnetId),
        securityGroupIds: [this.securityGroup.ref],
        privateDnsEnabled: true,
      });
    // Every function in the VPC reads its secrets; the RDS API gives the endpoint of an
    // RDS-managed admin secret.
    interfaceEndpoint('SecretsManagerVpcEndpoint', 'secretsmanager');
    interfaceEndpoint('RdsVpcEndpoint', 'rds');
    if (props.dynamicCredentials) {
      // issue-credentials' aws-sts roles.
      interfaceEndpoint('StsVpcEndpoint', 'sts');
      if (props.routeTableIds && props.routeTableIds.length > 0) {
        // The lease table; a gateway endpoint is a route in the subnets' route tables.
        new ec2.CfnVPCEndpoint(this, 'DynamoDbVpcEndpoint', {
          vpcEndpointType: 'Gateway',
          serviceName: `com.amazonaws.${this.region}.dynamodb`,
          vpcId: props.vpc.vpcId,
          routeTableIds: props.routeTableIds,
        });
      }
    }
  }

  private get region(): string {
    return Stack.of(this).region;
  }
}
