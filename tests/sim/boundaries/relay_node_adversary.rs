//! The adversary of the `relay_node` driver: what it does on its links (within the rules it can
//! know of on a careful link, anything on the others), and its checks of what the honest nodes
//! send it.

use super::*;

impl World {
    /// The adversary receives a batch on its link `l`, and checks it.
    pub(super) fn deliver_to_adversary(&mut self, l: usize, bytes: &[u8]) {
        let net = &mut self.links[l];
        let z = net.z.as_mut().expect("the adversary's link");
        let (txn, out) = (&mut net.link[1].txn, &mut net.out[1]);
        for message in Messages::new(bytes) {
            let message = message.expect("an honest node wrote a malformed message");
            crate::trace!(
                "link {l} -> adversary: {:?} {:?} msgid {} parent {} error {} {} bytes",
                message.flags(),
                message.command(),
                message.msgid().0,
                message.parent().0,
                message.error().0,
                message.payload_len()
            );
            let delivery = match txn.handle_message(out, &message) {
                Ok(Some(Received::Txn(delivery))) => delivery,
                Ok(_) => continue,
                Err(error) => {
                    assert!(
                        z.raw,
                        "the adversary's transaction layer refused an honest node: {error}"
                    );
                    return;
                }
            };
            let data = !delivery.closes() && !delivery.flags.contains(Flags::ABORT);
            match delivery.command {
                Command::LINK_CONN if delivery.opens() => {
                    Hello::decode(delivery.payload).expect("an honest hello decodes");
                }
                Command::LINK_SPAN if data && delivery.parent.is_none() => {
                    Advert::decode(delivery.payload).expect("an honest advert decodes");
                }
                Command::LINK_SPAN_REQUEST if data && delivery.parent.is_none() => {
                    Seqno::decode_request(delivery.payload).expect("an honest request decodes");
                }
                _ => {}
            }
            if delivery.opens() {
                z.theirs.push((delivery.txn, delivery.command, delivery.parent.is_some()));
                z.live.push(delivery.txn);
            }
            while let Some(event) = txn.poll_event() {
                if let Event::Ended { txn: ended, .. } = event {
                    z.live.retain(|&t| t != ended);
                    z.theirs.retain(|&(t, ..)| t != ended);
                    z.spans.retain(|&(t, _)| t != ended);
                    if z.conn == Some(ended) {
                        z.conn = None;
                    }
                }
            }
        }
    }

    /// One thing the adversary does on one of its links. On a careful link it breaks no rule
    /// it can know of (so it lives long enough to get somewhere); on the others, anything.
    pub(super) fn adversary_op(&mut self, input: &mut Input<'_>) {
        let links: Vec<usize> = (0..self.links.len())
            .filter(|&l| self.links[l].up && self.links[l].z.is_some())
            .collect();
        let Some(l) = pick(input, &links) else {
            // Gone: it comes back, to one of its homes.
            if input.one_in(4) {
                let home = self.z_homes[input.below(self.z_homes.len())];
                self.connect(home, Z, input);
            }
            return;
        };
        let origins = [node_id(0), node_id(1), node_id(2), Z_ID, NodeId(77)];
        let net = &mut self.links[l];
        let z = net.z.as_mut().expect("the adversary's link");
        let careful = z.careful;
        let (txn, out) = (&mut net.link[1].txn, &mut net.out[1]);
        match input.below(32) {
            0 if !careful => {
                let (payload, _) = say::hello(input);
                let flags = if input.one_in(16) { Flags::DELETE } else { Flags::NONE };
                if let Ok(t) = txn.open(out, None, Command::LINK_CONN, &payload, flags) {
                    z.conn.get_or_insert(t);
                    z.live.push(t);
                }
            }
            1..=6 => {
                let mount = say::mount(input);
                if careful && z.spans.iter().any(|&(_, m)| m == mount) {
                    return;
                }
                let mut advert = say::advert_of(input, mount, &origins);
                let payload = if careful {
                    if z.role == Some(Role::Client) {
                        advert.kind = input.pick(&[MountKind::Client, MountKind::Cache]);
                    }
                    say::advert_clean(&advert)
                } else {
                    say::advert_payload(input, &advert)
                };
                let flags = if !careful && input.one_in(16) { Flags::DELETE } else { Flags::NONE };
                if let Ok(t) = txn.open(out, None, Command::LINK_SPAN, &payload, flags) {
                    z.spans.push((t, mount));
                    z.live.push(t);
                }
            }
            7..=10 => {
                let Some((t, mount)) = pick(input, &z.spans) else { return };
                let mut advert = say::advert_of(input, mount, &origins);
                let payload = if careful {
                    if z.role == Some(Role::Client) {
                        advert.kind = input.pick(&[MountKind::Client, MountKind::Cache]);
                    }
                    say::advert_clean(&advert)
                } else {
                    if input.one_in(8) {
                        advert.mount = say::mount(input);
                    }
                    say::advert_payload(input, &advert)
                };
                let _ =
                    txn.send(out, t, Command::LINK_SPAN, &payload, Flags::NONE, ErrorCode::NONE);
            }
            11..=13 => {
                // A retraction or forced close of one of its spans, or of anything it holds.
                let t = if !careful && input.one_in(8) {
                    if z.conn.is_some() {
                        z.closed_conn = true;
                    }
                    pick(input, &z.live)
                } else {
                    pick(input, &z.spans).map(|(t, _)| t)
                };
                let Some(t) = t else { return };
                let error = ErrorCode(input.below(7) as u32);
                let _ =
                    if input.bool() { txn.close(out, t, error) } else { txn.abort(out, t, error) };
                z.spans.retain(|&(s, _)| s != t);
            }
            14 | 15 => {
                let spans: Vec<TxnId> = z
                    .theirs
                    .iter()
                    .filter(|&&(_, c, stacked)| c == Command::LINK_SPAN && !stacked)
                    .map(|&(t, ..)| t)
                    .collect();
                let Some(t) = pick(input, &spans) else { return };
                let payload =
                    if careful { say::seqno_clean(input) } else { say::seqno_payload(input) };
                let command = Command::LINK_SPAN_REQUEST;
                let _ = txn.send(out, t, command, &payload, Flags::NONE, ErrorCode::NONE);
            }
            16..=20 => {
                // A circuit inside one of the honest node's spans (or inside anything).
                let parents: Vec<TxnId> = if !careful && input.one_in(4) {
                    z.live.clone()
                } else {
                    let spans = z.theirs.iter().filter(|&&(_, c, s)| c == Command::LINK_SPAN && !s);
                    spans.map(|&(t, ..)| t).collect()
                };
                let parent = pick(input, &parents);
                if careful && parent.is_none() {
                    return;
                }
                let mut payload = Vec::new();
                if input.bool() {
                    // A client address, for a span of an aggregate.
                    payload.extend_from_slice(&(1 + input.below(3) as u128).to_le_bytes());
                }
                payload.extend_from_slice(&input.vec(24));
                let flags = if input.one_in(4) { Flags::NONE } else { Flags::DELETE };
                let command = match input.below(8) {
                    0 => Command::new(input.u8(), input.u16()),
                    1 => {
                        // A trace: a request of any hop count, limit and target (an honest
                        // node, or none), or bytes as they come.
                        if input.bool() {
                            payload = say::trace_request(input, &origins).to_vec();
                        }
                        Command::LINK_TRACE
                    }
                    _ => ECHO,
                };
                if let Ok(t) = txn.open(out, parent, command, &payload, flags) {
                    z.live.push(t);
                }
            }
            21..=25 => {
                // An answer on a circuit opened into its spans (or, now and then, on anything
                // the honest node opened): data, a close, a forced close.
                let circuits: Vec<TxnId> = if !careful && input.one_in(8) {
                    z.theirs.iter().map(|&(t, ..)| t).collect()
                } else {
                    z.theirs.iter().filter(|&&(.., stacked)| stacked).map(|&(t, ..)| t).collect()
                };
                let Some(t) = pick(input, &circuits) else { return };
                let payload = input.vec(24);
                let (flags, error) = match input.below(5) {
                    0 => (Flags::NONE, ErrorCode::NONE),
                    1 => (Flags::ABORT, ErrorCode::NONE),
                    2 => (Flags::ABORT | Flags::DELETE, ErrorCode(input.below(8) as u32)),
                    _ => (Flags::DELETE, ErrorCode(input.below(3) as u32)),
                };
                let _ = txn.send(out, t, ECHO, &payload, flags, error);
            }
            26 if !careful => {
                let t = pick(input, &z.live);
                let Some(t) = t else { return };
                let payload = input.vec(24);
                let flags = if input.one_in(4) { Flags::DELETE } else { Flags::NONE };
                let _ = txn.send(out, t, ECHO, &payload, flags, ErrorCode::NONE);
            }
            27 if !careful && input.one_in(2) => {
                // Written behind its transaction layer's back.
                let msgid = match input.below(3) {
                    0 => 1 + input.below(12) as u64,
                    1 => 0,
                    _ => input.u64(),
                };
                let flags = Flags::from_bits(input.u8() & 0x1f).expect("defined bits");
                let command = input.pick(&[
                    Command::LINK_CONN,
                    Command::LINK_SPAN,
                    Command::LINK_SPAN_REQUEST,
                    ECHO,
                ]);
                let parent = if input.one_in(3) { 1 + input.below(12) as u64 } else { 0 };
                let payload = match command {
                    Command::LINK_CONN => say::hello(input).0,
                    Command::LINK_SPAN => {
                        let mount = say::mount(input);
                        let advert = say::advert_of(input, mount, &origins);
                        say::advert_payload(input, &advert)
                    }
                    Command::LINK_SPAN_REQUEST => say::seqno_payload(input),
                    _ => input.vec(24),
                };
                let repr = Repr { command, payload_len: payload.len() as u32, ..Repr::default() };
                let at = out.len();
                out.put(&repr, &payload);
                out[at] = flags.bits();
                out[at + 8..at + 16].copy_from_slice(&msgid.to_le_bytes());
                out[at + 16..at + 24].copy_from_slice(&parent.to_le_bytes());
                z.raw = true;
            }
            28 => {
                // Gone.
                self.cut(l);
                return;
            }
            _ => {
                let command = Command::new(input.u8() % 2, input.u16() % 8);
                let payload = input.vec(16);
                let _ = txn.send_oneway(out, command, ErrorCode(input.below(8) as u32), &payload);
            }
        }
        self.put_in_flight();
    }
}
