#!/bin/sh
# Example primary hook for a cluster in a cloud (unicast_hb), where no
# gratuitous ARP moves an address: the new primary asks the cloud's API to
# move the secondary private IP / elastic IP / route to itself. This script
# only LOGS what it would call; replace the echo lines with your provider's
# CLI. Install it as cluster.hooks.primary (it is synchronized like the rest
# of cluster:, so put it at the same path on every node).
#
# hagentd runs hooks asynchronously (they never delay the takeover), one
# after another, with a timeout (hooks.timeout), and this environment:
#   HAGENT_ROLE           the new role: primary, secondary or fault
#   HAGENT_PREVIOUS_ROLE  the role before
#   HAGENT_REASON         why, in FortiOS words ("node-b is selected as the
#                         primary because it is the only healthy member (lost:
#                         node-a, no heartbeat for 1.2s)")
#   HAGENT_NODE           this node's name
#   HAGENT_VCLUSTER       the virtual cluster whose role changed (1 or 2)
#   PATH                  /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# and nothing else of hagentd's environment: name what the hook needs
# (CLOUD_ADDRESS, CLOUD_INSTANCE, the CLI's credentials) in
# cluster.hooks.env, e.g. env: [CLOUD_ADDRESS, CLOUD_INSTANCE, AWS_PROFILE].
# At the timeout the hook's whole process group is killed.
# A hook that fails is logged and in `agentctl ha history`; it is not retried.
set -eu

ADDRESS="${CLOUD_ADDRESS:-10.0.1.100}"    # the address that follows the primary
INSTANCE="${CLOUD_INSTANCE:-$HAGENT_NODE}" # this VM's id at the provider

case "$HAGENT_ROLE" in
primary)
	logger -t hagent-cloud "would call: aws ec2 assign-private-ip-addresses --network-interface-id <eni of $INSTANCE> --private-ip-addresses $ADDRESS --allow-reassignment"
	logger -t hagent-cloud "would call: aws ec2 replace-route --route-table-id <rtb> --destination-cidr-block 0.0.0.0/0 --network-interface-id <eni of $INSTANCE>"
	;;
secondary | fault)
	logger -t hagent-cloud "nothing to do as $HAGENT_ROLE (the new primary moves $ADDRESS to itself)"
	;;
esac
echo "hagent-cloud: $HAGENT_NODE $HAGENT_PREVIOUS_ROLE -> $HAGENT_ROLE: $HAGENT_REASON"
