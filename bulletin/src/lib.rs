//! The bulletin board: the registry of which host is in which virtual LAN.
//!
//! Not built yet: the registry server, its QUIC protocol and the client that feeds
//! vmvpn's peer table arrive with the bulletin issue. Until then vmvpn runs from static
//! peer lists (`[[lan]] peers = [...]`), a mode that stays supported afterwards.
