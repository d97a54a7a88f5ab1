// PCI and virtio-pci numbers, each from the Linux uapi header that defines it (installed at
// /usr/include/linux/pci_regs.h and /usr/include/linux/virtio_pci.h; test/pci-layout.test.ts
// compiles a C program against both and compares), and VIRTIO 1.3 §4.1.

// ── linux/pci_regs.h: type 0 configuration header ──
export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_COMMAND_IO = 0x1;
export const PCI_COMMAND_MEMORY = 0x2;
export const PCI_COMMAND_MASTER = 0x4;
export const PCI_COMMAND_INTX_DISABLE = 0x400;
export const PCI_STATUS = 0x06;
export const PCI_STATUS_INTERRUPT = 0x08;
export const PCI_STATUS_CAP_LIST = 0x10;
export const PCI_REVISION_ID = 0x08;
export const PCI_CLASS_PROG = 0x09;
export const PCI_CLASS_DEVICE = 0x0a;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_BASE_ADDRESS_0 = 0x10;
export const PCI_BASE_ADDRESS_SPACE_IO = 0x01;
export const PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x04;
export const PCI_BASE_ADDRESS_MEM_PREFETCH = 0x08;
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c;
export const PCI_SUBSYSTEM_ID = 0x2e;
export const PCI_CAPABILITY_LIST = 0x34;
export const PCI_INTERRUPT_LINE = 0x3c;
export const PCI_INTERRUPT_PIN = 0x3d;
export const PCI_CAP_ID_VNDR = 0x09;
export const PCI_CAP_ID_MSIX = 0x11;
export const PCI_CAP_LIST_NEXT = 1;
export const PCI_MSIX_FLAGS = 2;
export const PCI_MSIX_FLAGS_QSIZE = 0x07ff;
export const PCI_MSIX_FLAGS_MASKALL = 0x4000;
export const PCI_MSIX_FLAGS_ENABLE = 0x8000;
export const PCI_MSIX_TABLE = 4;
export const PCI_MSIX_PBA = 8;
/** Bytes of the MSI-X capability (PCI_CAP_MSIX_SIZEOF). */
export const PCI_CAP_MSIX_SIZEOF = 12;
export const PCI_MSIX_ENTRY_SIZE = 16;
export const PCI_MSIX_ENTRY_LOWER_ADDR = 0x0;
export const PCI_MSIX_ENTRY_UPPER_ADDR = 0x4;
export const PCI_MSIX_ENTRY_DATA = 0x8;
export const PCI_MSIX_ENTRY_VECTOR_CTRL = 0xc;
export const PCI_MSIX_ENTRY_CTRL_MASKBIT = 0x1;

// ── linux/pci_ids.h (kernel-internal; values as QEMU's include/hw/pci/pci_ids.h has them) ──
/** Red Hat / Qumranet, the virtio vendor (VIRTIO 1.3 §4.1.2). */
export const PCI_VENDOR_ID_REDHAT_QUMRANET = 0x1af4;
/** Modern devices are 0x1040 + the virtio device ID (VIRTIO 1.3 §4.1.2). */
export const VIRTIO_PCI_DEVICE_ID_BASE = 0x1040;
/** QEMU's subsystem ID (PCI_SUBDEVICE_ID_QEMU); §4.1.2.1 wants ≥ 0x40 for non-transitional devices. */
export const PCI_SUBDEVICE_ID_QEMU = 0x1100;
/** Class codes (class << 16 | subclass << 8 | prog-if) as QEMU's virtio-pci devices report them. */
export const PCI_CLASS_NETWORK_ETHERNET = 0x020000;
export const PCI_CLASS_STORAGE_SCSI = 0x010000;
export const PCI_CLASS_OTHERS = 0xff0000;

// ── linux/virtio_pci.h ──
export const VIRTIO_PCI_ISR_QUEUE = 0x1; // VIRTIO 1.3 §4.1.4.5 (bit 0; the header names only CONFIG)
export const VIRTIO_PCI_ISR_CONFIG = 0x2;
export const VIRTIO_MSI_NO_VECTOR = 0xffff;
export const VIRTIO_PCI_CAP_COMMON_CFG = 1;
export const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
export const VIRTIO_PCI_CAP_ISR_CFG = 3;
export const VIRTIO_PCI_CAP_DEVICE_CFG = 4;
export const VIRTIO_PCI_CAP_PCI_CFG = 5;
/** struct virtio_pci_cap field offsets (VIRTIO_PCI_CAP_*) and size. */
export const VIRTIO_PCI_CAP_VNDR = 0;
export const VIRTIO_PCI_CAP_NEXT = 1;
export const VIRTIO_PCI_CAP_LEN = 2;
export const VIRTIO_PCI_CAP_CFG_TYPE = 3;
export const VIRTIO_PCI_CAP_BAR = 4;
export const VIRTIO_PCI_CAP_ID = 5;
export const VIRTIO_PCI_CAP_OFFSET = 8;
export const VIRTIO_PCI_CAP_LENGTH = 12;
export const VIRTIO_PCI_CAP_SIZE = 16;
/** struct virtio_pci_notify_cap: notify_off_multiplier at 16, size 20. */
export const VIRTIO_PCI_NOTIFY_CAP_MULT = 16;
export const VIRTIO_PCI_NOTIFY_CAP_SIZE = 20;
/** struct virtio_pci_cfg_cap: pci_cfg_data at 16, size 20. */
export const VIRTIO_PCI_CFG_CAP_DATA = 16;
export const VIRTIO_PCI_CFG_CAP_SIZE = 20;
/** struct virtio_pci_common_cfg field offsets (VIRTIO_PCI_COMMON_*). */
export const VIRTIO_PCI_COMMON_DFSELECT = 0;
export const VIRTIO_PCI_COMMON_DF = 4;
export const VIRTIO_PCI_COMMON_GFSELECT = 8;
export const VIRTIO_PCI_COMMON_GF = 12;
export const VIRTIO_PCI_COMMON_MSIX = 16;
export const VIRTIO_PCI_COMMON_NUMQ = 18;
export const VIRTIO_PCI_COMMON_STATUS = 20;
export const VIRTIO_PCI_COMMON_CFGGENERATION = 21;
export const VIRTIO_PCI_COMMON_Q_SELECT = 22;
export const VIRTIO_PCI_COMMON_Q_SIZE = 24;
export const VIRTIO_PCI_COMMON_Q_MSIX = 26;
export const VIRTIO_PCI_COMMON_Q_ENABLE = 28;
export const VIRTIO_PCI_COMMON_Q_NOFF = 30;
export const VIRTIO_PCI_COMMON_Q_DESCLO = 32;
export const VIRTIO_PCI_COMMON_Q_DESCHI = 36;
export const VIRTIO_PCI_COMMON_Q_AVAILLO = 40;
export const VIRTIO_PCI_COMMON_Q_AVAILHI = 44;
export const VIRTIO_PCI_COMMON_Q_USEDLO = 48;
export const VIRTIO_PCI_COMMON_Q_USEDHI = 52;
export const VIRTIO_PCI_COMMON_Q_NDATA = 56;
export const VIRTIO_PCI_COMMON_Q_RESET = 58;
/** sizeof(struct virtio_pci_common_cfg): the least Linux's vp_modern_probe accepts. */
export const VIRTIO_PCI_COMMON_CFG_SIZE = 56;
/**
 * offsetofend(struct virtio_pci_modern_common_cfg, admin_queue_num) (Linux 6.x
 * include/linux/virtio_pci_modern.h): queue_notify_data, queue_reset, admin_queue_index and
 * admin_queue_num follow at 56..63. We advertise these 64 bytes; the four extra fields read 0.
 */
export const VIRTIO_PCI_MODERN_COMMON_CFG_SIZE = 64;
