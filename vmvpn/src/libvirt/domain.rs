//! One libvirt domain's XML, as `virsh dumpxml` prints it: its name, UUID and the MACs of
//! its interfaces.

use super::LibvirtError;

/// A MAC address.
pub type Mac = [u8; 6];

/// What vmvpn needs of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// `<name>`.
    pub name: String,
    /// `<uuid>`, when the XML has one.
    pub uuid: Option<String>,
    /// `<devices><interface><mac address=…>`, in order.
    pub macs: Vec<Mac>,
}

/// Read a domain's XML.
pub fn parse(xml: &str) -> Result<Domain, LibvirtError> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| LibvirtError::Xml(e.to_string()))?;
    let root = doc.root_element();
    if !root.has_tag_name("domain") {
        return Err(LibvirtError::Xml(format!(
            "the root is <{}>, not <domain>",
            root.tag_name().name()
        )));
    }
    let child_text = |tag: &str| {
        root.children()
            .find(|n| n.has_tag_name(tag))
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    let name = child_text("name").ok_or_else(|| LibvirtError::Xml("no <name>".into()))?;
    let macs = root
        .children()
        .filter(|n| n.has_tag_name("devices"))
        .flat_map(|d| d.children().filter(|n| n.has_tag_name("interface")))
        .filter_map(|i| i.children().find(|n| n.has_tag_name("mac")))
        .filter_map(|m| m.attribute("address").and_then(common::text::parse_mac))
        .collect();
    Ok(Domain {
        name,
        uuid: child_text("uuid"),
        macs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_DOMAIN: &str = "<domain type='test' id='1'>
  <name>test</name>
  <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
  <devices>
    <disk type='file' device='disk'><target dev='vda' bus='virtio'/></disk>
    <interface type='network'>
      <mac address='aa:bb:cc:dd:ee:ff'/>
      <source network='default'/>
    </interface>
    <interface type='bridge'><mac address='52:54:00:12:34:56'/></interface>
    <interface type='user'/>
  </devices>
</domain>";

    #[test]
    fn the_test_drivers_domain_gives_its_name_uuid_and_macs() {
        let d = parse(TEST_DOMAIN).expect("parses");
        assert_eq!(d.name, "test");
        assert_eq!(
            d.uuid.as_deref(),
            Some("6695eb01-f6a4-8304-79aa-97f2502e193f")
        );
        assert_eq!(
            d.macs,
            [
                [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff],
                [0x52, 0x54, 0, 0x12, 0x34, 0x56]
            ]
        );
    }

    #[test]
    fn bad_xml_is_an_error_not_a_panic() {
        for bad in [
            "",
            "<domain>",
            "<network><name>x</name></network>",
            "<domain><uuid>u</uuid></domain>",
            "<domain><name> </name></domain>",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let d = parse("<domain><name>x</name><devices><interface><mac address='zz'/></interface></devices></domain>")
            .expect("a bad MAC is skipped");
        assert!(d.macs.is_empty());
    }
}
