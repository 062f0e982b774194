# A stand-in for Phoenix.PubSub 2.x with its PG2 adapter, for the interop
# tests (hex is unreachable here, so the real package cannot be installed).
# It reproduces what goes on the wire and how a node delivers, after
# phoenixframework/phoenix_pubsub:
#   lib/phoenix/pubsub.ex      (subscribe: Registry.register; broadcast: the
#                               adapter, then Registry.dispatch into dispatch/3)
#   lib/phoenix/pubsub/pg2.ex  (https://github.com/phoenixframework/phoenix_pubsub/blob/main/lib/phoenix/pubsub/pg2.ex)
# - the :pg scope is Phoenix.PubSub (started once per node by the application);
# - a pubsub named Name has pool_size workers registered as
#   Name.Adapter, :"Name.Adapter_2", ... each joined to the :pg group of its own name;
# - a broadcast picks the group by :erlang.phash2(self(), pool_size) and sends
#   {:forward_to_local, topic, message, dispatcher} to every member on another node;
# - a worker's handle_info of that calls local_broadcast with the dispatcher.
# The module is named Phoenix.PubSub so that the dispatcher on the wire, the
# atom Phoenix.PubSub, is a module with dispatch/3 here, as it is in Phoenix.

defmodule Phoenix.PubSub do
  def start(name, pool_size) do
    caller = self()

    spawn(fn ->
      case :pg.start_link(Phoenix.PubSub) do
        {:ok, _} -> :ok
        {:error, {:already_started, _}} -> :ok
      end

      adapter_name = Module.concat(name, "Adapter")
      {:ok, _} = Registry.start_link(keys: :duplicate, name: name, meta: [pubsub: {Phoenix.PubSub.PG2, adapter_name}])

      [_ | rest] = for n <- 1..pool_size, do: :"#{adapter_name}_#{n}"
      groups = [adapter_name | rest]
      :persistent_term.put(adapter_name, List.to_tuple(groups))
      for group <- groups, do: {:ok, _} = Phoenix.PubSub.PG2Worker.start_link({name, group})
      send(caller, :started)
      Process.sleep(:infinity)
    end)

    receive do
      :started -> :ok
    after
      5000 -> :timeout
    end
  end

  def subscribe(pubsub, topic) when is_atom(pubsub) and is_binary(topic) do
    {:ok, _} = Registry.register(pubsub, topic, nil)
    :ok
  end

  def broadcast(pubsub, topic, message, dispatcher \\ __MODULE__) when is_binary(topic) do
    {:ok, {adapter, name}} = Registry.meta(pubsub, :pubsub)
    :ok = adapter.broadcast(name, topic, message, dispatcher)
    local_broadcast(pubsub, topic, message, dispatcher)
  end

  def local_broadcast(pubsub, topic, message, dispatcher \\ __MODULE__) when is_binary(topic) do
    Registry.dispatch(pubsub, topic, {dispatcher, :dispatch, [:none, message]})
    :ok
  end

  def dispatch(entries, :none, message) do
    for {pid, _} <- entries, do: send(pid, message)
    :ok
  end

  def dispatch(entries, from, message) do
    for {pid, _} <- entries, pid != from, do: send(pid, message)
    :ok
  end
end

defmodule Phoenix.PubSub.PG2 do
  def broadcast(adapter_name, topic, message, dispatcher) do
    message = {:forward_to_local, topic, message, dispatcher}
    for pid <- :pg.get_members(Phoenix.PubSub, group(adapter_name)), node(pid) != node(), do: send(pid, message)
    :ok
  end

  defp group(adapter_name) do
    groups = :persistent_term.get(adapter_name)
    elem(groups, :erlang.phash2(self(), tuple_size(groups)))
  end
end

defmodule Phoenix.PubSub.PG2Worker do
  use GenServer

  def start_link({name, group}), do: GenServer.start_link(__MODULE__, {name, group}, name: group)

  @impl true
  def init({name, group}) do
    :ok = :pg.join(Phoenix.PubSub, group, self())
    {:ok, name}
  end

  @impl true
  def handle_info({:forward_to_local, topic, message, dispatcher}, pubsub) do
    Phoenix.PubSub.local_broadcast(pubsub, topic, message, dispatcher)
    {:noreply, pubsub}
  end

  def handle_info(_, pubsub), do: {:noreply, pubsub}
end

defmodule PubSubProbe do
  # A subscriber on this node that forwards what it gets to `report_to`.
  def subscriber(pubsub, topic, report_to) do
    caller = self()

    pid =
      spawn(fn ->
        :ok = Phoenix.PubSub.subscribe(pubsub, topic)
        send(caller, :subscribed)
        loop(report_to)
      end)

    receive do
      :subscribed -> pid
    end
  end

  defp loop(report_to) do
    receive do
      msg -> send(report_to, {:elixir_got, msg})
    end

    loop(report_to)
  end

  # Broadcasts from a fresh process each time, so the pool index varies.
  def broadcast(pubsub, topic, message) do
    task = Task.async(fn -> Phoenix.PubSub.broadcast(pubsub, topic, message) end)
    Task.await(task)
  end

  def members(group), do: :pg.get_members(Phoenix.PubSub, group)
end
