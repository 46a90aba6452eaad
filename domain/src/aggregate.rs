//! How an aggregate meets cqrs-es: `impl_aggregate!` wires an aggregate that decides and
//! evolves (the "decider" shape) to [`cqrs_es::Aggregate`], so each aggregate's file holds
//! its rules and the framework's signature is written once.

/// Implements [`cqrs_es::Aggregate`] for an aggregate with two inherent functions:
///
/// - `fn decide(&self, command) -> Result<Vec<Event>, Error>`: the events a command
///   records, in order (none when it changes nothing), or its rejection. It only reads the
///   state: every decided event is written, and so applied, afterwards. An aggregate whose
///   rules need its `Services` says `services: S, passed to decide` and takes them as a
///   second argument, `decide(&self, command, &S)`.
/// - `fn evolve(&mut self, event)`: applies one event and never fails.
///
/// An aggregate whose later decisions within one command depend on the earlier ones'
/// effects ([`crate::course::Course`] deciding a batch of applications seat by seat)
/// writes its own `handle` instead.
macro_rules! impl_aggregate {
    (
        $aggregate:ty,
        type: $type_name:literal,
        command: $command:ty,
        event: $event:ty,
        error: $error:ty,
        services: $services:ty $(,)?
    ) => {
        $crate::aggregate::impl_aggregate!(
            @impl $aggregate, $type_name, $command, $event, $error, $services,
            |aggregate: &$aggregate, command: $command, _services: &$services| {
                aggregate.decide(command)
            }
        );
    };
    (
        $aggregate:ty,
        type: $type_name:literal,
        command: $command:ty,
        event: $event:ty,
        error: $error:ty,
        services: $services:ty, passed to decide $(,)?
    ) => {
        $crate::aggregate::impl_aggregate!(
            @impl $aggregate, $type_name, $command, $event, $error, $services,
            |aggregate: &$aggregate, command: $command, services: &$services| {
                aggregate.decide(command, services)
            }
        );
    };
    (
        @impl $aggregate:ty, $type_name:literal, $command:ty, $event:ty, $error:ty,
        $services:ty, $decide:expr
    ) => {
        impl ::cqrs_es::Aggregate for $aggregate {
            const TYPE: &'static str = $type_name;
            type Command = $command;
            type Event = $event;
            type Error = $error;
            type Services = $services;

            async fn handle(
                &mut self,
                command: $command,
                services: &$services,
                sink: &::cqrs_es::event_sink::EventSink<Self>,
            ) -> Result<(), $error> {
                let decide = $decide;
                for event in decide(self, command, services)? {
                    sink.write(event, self).await;
                }
                Ok(())
            }

            fn apply(&mut self, event: $event) {
                self.evolve(event);
            }
        }
    };
}
pub(crate) use impl_aggregate;
