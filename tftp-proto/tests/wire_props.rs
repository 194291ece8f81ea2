//! Property tests of the wire layer: packets, option negotiation, netascii.

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use tftp_proto::options::Direction;
use tftp_proto::packet::Mode;
use tftp_proto_check::{
    check_negotiation, check_netascii, check_packet, ArbLimits, BuiltPacket, KnownName,
    NegotiateInput, NetasciiInput, OptName, OptValue, PacketInput,
};

fn cstring() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1u8..=255, 0..24)
}

fn pairs() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    prop::collection::vec((prop::collection::vec(1u8..=255, 1..12), cstring()), 0..8)
}

fn as_refs(p: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    p.iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, rng_seed: RngSeed::Fixed(1350), ..ProptestConfig::default() })]

    #[test]
    fn request_round_trip(write: bool, netascii: bool, filename in prop::collection::vec(1u8..=255, 1..64), options in pairs()) {
        let mode = if netascii { Mode::Netascii } else { Mode::Octet };
        let options = as_refs(&options);
        check_packet(&PacketInput::Built(BuiltPacket::Request { write, filename: &filename, mode, options }));
    }

    #[test]
    fn data_ack_error_oack_round_trip(block: u16, payload in prop::collection::vec(any::<u8>(), 0..600), code: u16, message in cstring(), options in pairs()) {
        check_packet(&PacketInput::Built(BuiltPacket::Data { block, payload: &payload }));
        check_packet(&PacketInput::Built(BuiltPacket::Ack { block }));
        check_packet(&PacketInput::Built(BuiltPacket::Error { code, message: &message }));
        check_packet(&PacketInput::Built(BuiltPacket::Oack(as_refs(&options))));
    }

    #[test]
    fn built_with_nul_is_refused(block: u16, code: u16, mut message in cstring(), at: prop::sample::Index) {
        message.insert(at.index(message.len() + 1), 0);
        check_packet(&PacketInput::Built(BuiltPacket::Error { code, message: &message }));
        check_packet(&PacketInput::Built(BuiltPacket::Request { write: false, filename: &message, mode: Mode::Octet, options: vec![] }));
        check_packet(&PacketInput::Built(BuiltPacket::Ack { block }));
    }

    #[test]
    fn parse_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        check_packet(&PacketInput::Raw(&bytes));
    }

    #[test]
    fn parse_near_valid_requests(opcode in 0u8..8, body in prop::collection::vec(prop_oneof![Just(0u8), Just(b'o'), any::<u8>()], 0..80)) {
        let mut bytes = vec![0, opcode];
        bytes.extend_from_slice(&body);
        check_packet(&PacketInput::Raw(&bytes));
    }

    #[test]
    fn negotiation_invariants(
        options in prop::collection::vec((
            prop_oneof![
                (prop_oneof![Just(KnownName::Blksize), Just(KnownName::Timeout), Just(KnownName::Tsize), Just(KnownName::Windowsize)], any::<u16>()).prop_map(|(k, m)| NameSpec::Known(k, m)),
                cstring().prop_map(NameSpec::Other),
            ],
            prop_oneof![
                prop_oneof![0u64..16, 0u64..70_000, any::<u64>()].prop_map(ValueSpec::Number),
                cstring().prop_map(ValueSpec::Other),
            ],
        ), 0..8),
        max_blksize: u16, max_windowsize: u16, max_window_bytes in prop_oneof![0u32..100_000, any::<u32>()],
        min_timeout: u8, max_timeout: u8, enabled: u8, write: bool, file_size: Option<u64>,
    ) {
        let options: Vec<_> = options.iter().map(|(n, v)| (n.as_arb(), v.as_arb())).collect();
        let input = NegotiateInput {
            options,
            limits: ArbLimits { max_blksize, max_windowsize, max_window_bytes, min_timeout, max_timeout, enabled },
            direction: if write { Direction::Write } else { Direction::Read },
            file_size,
        };
        check_negotiation(&input);
    }

    #[test]
    fn netascii_round_trip(
        data in prop::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(0u8), any::<u8>()], 0..2000),
        input_splits in prop::collection::vec(any::<u8>(), 0..16),
        output_splits in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        check_netascii(&NetasciiInput { data: &data, input_splits, output_splits });
    }
}

#[derive(Debug, Clone)]
enum NameSpec {
    Known(KnownName, u16),
    Other(Vec<u8>),
}

impl NameSpec {
    fn as_arb(&self) -> OptName<'_> {
        match self {
            NameSpec::Known(k, m) => OptName::Known(*k, *m),
            NameSpec::Other(b) => OptName::Other(b),
        }
    }
}

#[derive(Debug, Clone)]
enum ValueSpec {
    Number(u64),
    Other(Vec<u8>),
}

impl ValueSpec {
    fn as_arb(&self) -> OptValue<'_> {
        match self {
            ValueSpec::Number(n) => OptValue::Number(*n),
            ValueSpec::Other(b) => OptValue::Other(b),
        }
    }
}
