// virtio-net control virtqueue commands as the spec defines them (VIRTIO 1.3 §5.1.6.5,
// linux/virtio_net.h): what a driver sends and a device parses. Drivers import these from here,
// not from the simulator.

// Command classes and commands (linux/virtio_net.h).
/** Class: receive filtering modes (§5.1.6.5.1). */
export const VIRTIO_NET_CTRL_RX = 0;
/** RX command: promiscuous mode on/off. */
export const VIRTIO_NET_CTRL_RX_PROMISC = 0;
/** RX command: receive all multicast on/off. */
export const VIRTIO_NET_CTRL_RX_ALLMULTI = 1;
/** RX command: receive all unicast on/off (VIRTIO_NET_F_CTRL_RX_EXTRA). */
export const VIRTIO_NET_CTRL_RX_ALLUNI = 2;
/** RX command: receive no multicast on/off (VIRTIO_NET_F_CTRL_RX_EXTRA). */
export const VIRTIO_NET_CTRL_RX_NOMULTI = 3;
/** RX command: receive no unicast on/off (VIRTIO_NET_F_CTRL_RX_EXTRA). */
export const VIRTIO_NET_CTRL_RX_NOUNI = 4;
/** RX command: receive no broadcast on/off (VIRTIO_NET_F_CTRL_RX_EXTRA). */
export const VIRTIO_NET_CTRL_RX_NOBCAST = 5;
/** Class: MAC address filtering (§5.1.6.5.2). */
export const VIRTIO_NET_CTRL_MAC = 1;
/** MAC command: set the unicast and multicast filter tables. */
export const VIRTIO_NET_CTRL_MAC_TABLE_SET = 0;
/** MAC command: set the default MAC address (VIRTIO_NET_F_CTRL_MAC_ADDR). */
export const VIRTIO_NET_CTRL_MAC_ADDR_SET = 1;
/** Class: VLAN filtering (§5.1.6.5.3). */
export const VIRTIO_NET_CTRL_VLAN = 2;
/** VLAN command: accept a VLAN id. */
export const VIRTIO_NET_CTRL_VLAN_ADD = 0;
/** VLAN command: stop accepting a VLAN id. */
export const VIRTIO_NET_CTRL_VLAN_DEL = 1;
/** Class: gratuitous packet announcement (§5.1.6.5.4). */
export const VIRTIO_NET_CTRL_ANNOUNCE = 3;
/** ANNOUNCE command: the driver acknowledges an announcement request. */
export const VIRTIO_NET_CTRL_ANNOUNCE_ACK = 0;
/** Class: multiqueue (§5.1.6.5.5). */
export const VIRTIO_NET_CTRL_MQ = 4;
/** MQ command: set the number of queue pairs in use. */
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET = 0;
// Command answers.
/** Ack: the command succeeded. */
export const VIRTIO_NET_OK = 0;
/** Ack: the command failed. */
export const VIRTIO_NET_ERR = 1;

/** The RX mode flags (VIRTIO_NET_CTRL_RX_*). */
export interface RxMode {
  /** VIRTIO_NET_CTRL_RX_PROMISC: receive every frame. */
  promisc: boolean;
  /** VIRTIO_NET_CTRL_RX_ALLMULTI: receive every multicast frame. */
  allmulti: boolean;
  /** VIRTIO_NET_CTRL_RX_ALLUNI: receive every unicast frame. */
  alluni: boolean;
  /** VIRTIO_NET_CTRL_RX_NOMULTI: receive no multicast frame. */
  nomulti: boolean;
  /** VIRTIO_NET_CTRL_RX_NOUNI: receive no unicast frame. */
  nouni: boolean;
  /** VIRTIO_NET_CTRL_RX_NOBCAST: receive no broadcast frame. */
  nobcast: boolean;
}
